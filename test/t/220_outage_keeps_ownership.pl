# 220_outage_keeps_ownership.pl: a batch-level database error neither
# raises delivery counts nor lets another consumer take the batch (SPEC §4,
# batch-level database errors).
#
# The user pre-created public.positions partitioned by range of ts, with no
# partition at all: every row of the batch fails with the same SQLSTATE (no
# partition found), which is batch-level.  With processor.claim_min_idle =
# 1s and a fixed backoff of 3 s (retry_min = retry_max = 3s), for at least
# 3 x claim_min_idle:
#
# - the worker reports status "backoff" and a last_error naming the
#   partition, and counts db_retries;
# - it retries the same batch from memory: entries_read does not grow;
# - in XPENDING every entry of the batch stays on the worker's consumer,
#   delivery count 1, idle below claim_min_idle (XCLAIM ... JUSTID);
# - XAUTOCLAIM by another consumer ("thief", min-idle = claim_min_idle)
#   claims nothing.
# Both are sampled every ~20 ms on one Redis connection.
#
# Then CREATE TABLE ... PARTITION OF positions DEFAULT: the batch lands,
# nothing pending, no dead letters, db_retries > 0.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;

use RedisServer;
use ProcessorTest;

my $stream = 'telemetry:t';
my $min_idle_ms = 1000;

my $redis = RedisServer->new;
my $node = new_node(
	'outage',
	redis => $redis,
	'processor.claim_min_idle' => '1s',
	'processor.claim_interval' => '1s',
	'processor.retry_min' => '3s',
	'processor.retry_max' => '3s');

# The target as the user made it: the worker's columns, partitioned by ts,
# and no partition.
$node->safe_psql('postgres',
	target_table_ddl(partition_by => 'RANGE (ts)'));

$node->safe_psql('postgres', 'CREATE EXTENSION processor');
ok( worker_running($node),
	'worker running with the partitioned target (accepted as valid)');
my $consumer = worker_stat($node, 'consumer');

# Three entries in one batch (MULTI/EXEC: one read takes them all).
my @cmds = (['MULTI']);
for my $i (1 .. 3)
{
	push @cmds,
	  [
		'XADD', $stream, '*', 'device_id', "dev-$i",
		'ts', 1767225600000 + $i, 'lat', '52.1', 'lon', '4.9'
	  ];
}
push @cmds, ['EXEC'];
$redis->pipeline(@cmds);
my @ids = grep { /^\d+-\d+$/ } split /\n/,
  $redis->cli('XRANGE', $stream, '-', '+');
is(scalar(@ids), 3, 'three entries published');

ok( poll_until(
		sub {
			$node->safe_psql('postgres',
				q{SELECT status = 'backoff' AND last_error LIKE '%partition%'
				  FROM processor.stats() WHERE worker = 1}) eq 't';
		}),
	'status backoff, last_error names the missing partition')
  or diag $node->safe_psql('postgres', 'SELECT * FROM processor.stats()');
note 'last_error: ' . worker_stat($node, 'last_error');
my $read_at_start = worker_stat($node, 'entries_read');
is($read_at_start, '3', 'the batch was read once');

# Watch for 3.5 x claim_min_idle, on one Redis connection.
# Another consumer tries to take whatever is idle for claim_min_idle.
my $w = sample_pending(
	$redis,
	stream => $stream,
	seconds => 3.5 * $min_idle_ms / 1000,
	ids => \@ids,
	thief_min_idle => $min_idle_ms);
note "$w->{samples} XPENDING samples, max idle $w->{max_idle} ms";

is_deeply($w->{consumers}, { $consumer => 3 * $w->{samples} },
	"every entry stayed pending on the worker's consumer ($consumer)");
is($w->{max_count}, 1, 'delivery counts stayed 1');
cmp_ok($w->{max_idle}, '<', $min_idle_ms,
	'idle time stayed below claim_min_idle (ownership kept with XCLAIM JUSTID)');
is($w->{stolen}, '', 'XAUTOCLAIM by another consumer claimed nothing');
is(worker_stat($node, 'status'), 'backoff', 'still backing off');
is(worker_stat($node, 'entries_read'), $read_at_start,
	'retried from memory: entries_read did not grow');
cmp_ok(worker_stat($node, 'db_retries'), '>=', 1, 'db_retries counted');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.positions_dead_letter'),
	'0', 'an outage makes no dead letters');

# --- The partition appears.

$node->safe_psql('postgres',
	'CREATE TABLE public.p_all PARTITION OF public.positions DEFAULT');

ok(wait_for_rows($node, 'SELECT count(*) FROM public.positions', '3'),
	'the batch landed once the partition exists');
ok(poll_until(sub { pending_count($redis) == 0 }), 'nothing pending');
is( $node->safe_psql(
		'postgres',
		q{SELECT string_agg(stream_id, ' ' ORDER BY stream_id) FROM public.p_all}),
	join(' ', sort @ids),
	'every entry in the new partition, with its stream id');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.positions_dead_letter'),
	'0', 'no dead letters');
is(worker_stat($node, 'entries_read'), '3', 'still read only once');
cmp_ok(worker_stat($node, 'db_retries'), '>', 0, 'db_retries > 0');

$node->stop;
$redis->stop;

done_testing();
