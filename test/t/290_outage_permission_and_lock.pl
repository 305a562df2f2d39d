# 290_outage_permission_and_lock.pl: a database that refuses or delays
# writes never turns valid positions into dead letters, and the wait neither
# raises delivery counts nor gives the entries away (issue 4, test 5; SPEC
# §4: batch-level database errors; §9: a dedicated role).
#
# The worker connects as the dedicated role "ingest" (LOGIN, CONNECT, INSERT
# and SELECT on the pre-created target, INSERT on the pre-created
# dead-letter table), with processor.claim_min_idle = 3s.
#
# 1. INSERT on the target revoked from ingest, 20 entries published in one
#    MULTI/EXEC: "permission denied" is batch-level, the worker backs off
#    (status backoff, last_error says so).  For 6 s (2 x claim_min_idle),
#    XPENDING is sampled every ~20 ms: every entry stays pending on the
#    worker's consumer with delivery count 1 and idle time below
#    claim_min_idle; entries_read does not grow (retried from memory).
#    GRANT again: all 20 land, none dead-lettered, nothing pending.
# 2. LOCK TABLE public.positions (ACCESS EXCLUSIVE) held by another session
#    for 5 s while 20 more entries are published: the worker waits on the
#    lock (pg_stat_activity), nothing is committed (processor.stats()
#    inserted unchanged, entries pending in Redis), no dead letters; after
#    the locking session's COMMIT they all land, nothing pending.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use RedisServer;
use ProcessorTest;

my $stream = 'telemetry:t';
my $min_idle_ms = 3000;
my $n = 0;

# Publish $count entries in one MULTI/EXEC; returns their ids.
sub publish
{
	my ($redis, $count) = @_;
	my @cmds;
	for (1 .. $count)
	{
		$n++;
		push @cmds,
		  [
			'XADD', $stream, '*', 'device_id', 'dev-' . ($n % 7),
			'ts', 1767225600000 + $n, 'lat', '52.1', 'lon', '4.9'
		  ];
	}
	my $before = $redis->cli('XREVRANGE', $stream, '+', '-', 'COUNT', '1');
	my ($last) = $before =~ /^(\d+-\d+)/;
	$redis->pipeline(['MULTI'], @cmds, ['EXEC']);
	my @ids = grep { /^\d+-\d+$/ } split /\n/,
	  $redis->cli('XRANGE', $stream, defined $last ? "($last" : '-', '+');
	return @ids;
}

my $redis = RedisServer->new;
my $node = new_node(
	'outage2',
	redis => $redis,
	'processor.claim_min_idle' => '3s',
	'processor.claim_interval' => '1s',
	'processor.batch_size' => 100);

# The role and the tables, as an operator would prepare them.
$node->safe_psql(
	'postgres', q{
	CREATE ROLE ingest LOGIN;
	REVOKE CONNECT ON DATABASE postgres FROM PUBLIC;
	GRANT CONNECT ON DATABASE postgres TO ingest;
	} . target_table_ddl() . q{;
	} . dead_letter_table_ddl() . q{;
	GRANT INSERT, SELECT ON public.positions TO ingest;
	GRANT INSERT ON public.positions_dead_letter TO ingest;
	CREATE EXTENSION processor;
});
$node->append_conf('postgresql.conf', "processor.role = 'ingest'\n");
$node->restart;

ok( poll_until(
		sub {
			$node->safe_psql('postgres',
				q{SELECT usename FROM pg_stat_activity WHERE backend_type = 'processor'})
			  eq 'ingest'
			  && worker_stat($node, q{status = 'running' AND redis_connected}) eq 't';
		}),
	'the worker runs as ingest');
my $consumer = worker_stat($node, 'consumer');

my @first = publish($redis, 1);
ok(wait_for_rows($node, 'SELECT count(*) FROM public.positions', '1'),
	'ingest inserts');
ok(poll_until(sub { pending_count($redis) == 0 }), 'and acks');

# --- 1. INSERT revoked for 2 x claim_min_idle.

$node->safe_psql('postgres', 'REVOKE INSERT ON public.positions FROM ingest');
my $read0 = worker_stat($node, 'entries_read');
my @batch1 = publish($redis, 20);
is(scalar(@batch1), 20, '20 entries published in one MULTI/EXEC');

ok( poll_until(
		sub {
			worker_stat($node,
				q{status = 'backoff' AND last_error LIKE '%permission denied%'})
			  eq 't';
		}),
	'status backoff, last_error: permission denied')
  or diag $node->safe_psql('postgres', 'SELECT * FROM processor.stats()');
note 'last_error: ' . worker_stat($node, 'last_error');
my $read_at_start = worker_stat($node, 'entries_read');
is($read_at_start - $read0, 20, 'the batch was read once');

my $w = sample_pending(
	$redis,
	stream => $stream,
	seconds => 2 * $min_idle_ms / 1000,
	ids => \@batch1);
note sprintf('%d XPENDING samples over %.1f s, max idle %d ms',
	$w->{samples}, $w->{elapsed}, $w->{max_idle});

is_deeply($w->{consumers}, { $consumer => 20 * $w->{samples} },
	"every entry stayed pending on the worker's consumer ($consumer)");
is($w->{max_count}, 1, 'delivery counts stayed 1');
cmp_ok($w->{max_idle}, '<', $min_idle_ms,
	'idle time stayed below claim_min_idle (ownership kept)');
is(worker_stat($node, 'status'), 'backoff', 'still backing off after 6 s');
is(worker_stat($node, 'entries_read'), $read_at_start,
	'retried from memory: entries_read did not grow');
cmp_ok(worker_stat($node, 'db_retries'), '>=', 1, 'db_retries counted');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.positions'),
	'1', 'nothing stored while INSERT is revoked');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.positions_dead_letter'),
	'0', 'no dead letters while INSERT is revoked');

$node->safe_psql('postgres', 'GRANT INSERT ON public.positions TO ingest');
ok(wait_for_rows($node, 'SELECT count(*) FROM public.positions', '21'),
	'after GRANT, all 20 land');
ok(poll_until(sub { pending_count($redis) == 0 }), 'nothing pending');
is( $node->safe_psql(
		'postgres',
		q{SELECT string_agg(stream_id, ' ' ORDER BY stream_id COLLATE "C")
		  FROM public.positions}),
	join(' ', sort(@first, @batch1)),
	'each entry once, with its stream id');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.positions_dead_letter'),
	'0', 'none dead-lettered');
is(worker_stat($node, 'entries_read'), $read_at_start,
	'still read only once');
ok(poll_until(sub { worker_stat($node, 'status') eq 'running' }),
	'status running again');

# --- 2. ACCESS EXCLUSIVE lock on the target for 5 s.

my $inserted0 = worker_stat($node, 'inserted');
my $locker = $node->background_psql('postgres');
$locker->query_safe('BEGIN; LOCK TABLE public.positions;');
note 'ACCESS EXCLUSIVE lock held on public.positions';
my $lock_start = time();
my @batch2 = publish($redis, 20);
is(scalar(@batch2), 20, '20 more entries published');

ok( poll_until(
		sub {
			$node->safe_psql('postgres',
				q{SELECT wait_event_type FROM pg_stat_activity
				  WHERE backend_type = 'processor'}) eq 'Lock';
		}),
	'the worker waits on the lock');
my ($min_pending, $max_inserted) = (1e9, 0);
while (time() - $lock_start < 5)
{
	my $p = pending_count($redis);
	$min_pending = $p if $p < $min_pending;
	my $ins = worker_stat($node, 'inserted');
	$max_inserted = $ins if $ins > $max_inserted;
	usleep(200_000);
}
is($max_inserted, $inserted0, 'nothing committed while the lock is held');
is($min_pending, 20, 'the 20 entries stayed pending during the lock');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.positions_dead_letter'),
	'0', 'no dead letters during the lock');

$locker->query_safe('COMMIT');
$locker->quit;
note sprintf('lock released after %.1f s', time() - $lock_start);

ok(wait_for_rows($node, 'SELECT count(*) FROM public.positions', '41'),
	'after COMMIT, all 20 land');
ok(poll_until(sub { pending_count($redis) == 0 }), 'nothing pending');
is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) || '/' || count(DISTINCT stream_id) FROM public.positions}),
	'41/41', 'each entry once');
is( $node->safe_psql(
		'postgres',
		q{SELECT string_agg(stream_id, ' ' ORDER BY stream_id COLLATE "C")
		  FROM public.positions}),
	join(' ', sort(@first, @batch1, @batch2)),
	'stored stream ids = the published ids');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.positions_dead_letter'),
	'0', 'none dead-lettered');

$node->stop;
$redis->stop;

done_testing();
