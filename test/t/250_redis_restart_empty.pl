# 250_redis_restart_empty.pl: Redis losing its data, restarting empty, or
# going away for a while never costs an entry nor the worker's life (SPEC
# §4: consumer group, Redis down; issue 4, test 4).  The worker runs with
# processor.group_start_id = '$' throughout: a group re-created after data
# loss must start at 0 whatever that setting says, or the entries published
# between the loss and the worker's return would be skipped.
#
# 1. Data lost under a live connection: FLUSHALL and an XADD in one
#    MULTI/EXEC.  The worker's next read finds no group (NOGROUP), it logs
#    that the group is gone, re-creates it at 0, and the new entry lands.
# 2. Redis restarted without its data (stop, start: it comes back empty),
#    an entry published right away: it lands.
# 3. Redis down for ~3 s: the entries published before the stop landed
#    before it, those published right after the start land too; while Redis
#    is down the worker reports redis_connected = false.  By then the
#    worker's backoff has grown to processor.retry_max (1 s here), so the
#    entries are published before it is back (the test notes which came
#    first): with a group re-created at '$' instead of 0 they would be lost.
#
# Throughout, the worker's pid never changes, every entry is stored once,
# nothing is pending at the end, and there are no dead letters.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use RedisServer;
use ProcessorTest;

my $stream = 'telemetry:t';
my $n = 0;
my @published;

sub publish
{
	my ($redis) = @_;
	$n++;
	my $id = $redis->xadd($stream,
		device_id => "dev-$n",
		ts => 1767225600000 + $n,
		lat => '52.1',
		lon => '4.9');
	push @published, $id;
	return $id;
}

# Wait (20 s at most: an entry lands in well under a second) until every
# id given is stored.
sub stored
{
	my ($node, @ids) = @_;
	my $sql = 'SELECT count(*) FROM public.positions WHERE stream_id IN ('
	  . join(',', map { "'$_'" } @ids) . ')';
	my $ok = poll_until(sub { $node->safe_psql('postgres', $sql) == @ids },
		timeout => 20);
	diag "not stored after 20 s: @ids\n" . log_tail($node, 20) unless $ok;
	return $ok;
}

my $redis = RedisServer->new;
my $node = new_node(
	'restart',
	redis => $redis,
	'processor.group_start_id' => '$');

$node->safe_psql('postgres', 'CREATE EXTENSION processor');
ok( worker_running($node),
	'worker running');
my $pid = worker_stat($node, 'pid');
like($pid, qr/^\d+$/, "worker pid $pid");

ok(stored($node, publish($redis)), 'an entry published once the group exists lands');

# --- 1. FLUSHALL and a new entry at once: NOGROUP on the live connection.

my $offset = -s $node->logfile;
$redis->pipeline(
	['MULTI'], ['FLUSHALL'],
	[
		'XADD', $stream, '*', 'device_id', 'after-flush',
		'ts', '1767225699000', 'lat', '1', 'lon', '2'
	],
	['EXEC']);
my ($id_flush) = grep { /^\d+-\d+$/ } split /\n/,
  $redis->cli('XRANGE', $stream, '-', '+');
ok(defined $id_flush, 'data flushed, one new entry in the stream');
push @published, $id_flush;
ok(stored($node, $id_flush),
	'the entry published in the flush lands: the group was re-created at 0, not at $'
);
ok( $node->log_contains(
		qr/consumer group "processor" on "telemetry:t" is gone; re-creating it at 0/,
		$offset),
	'logged: the group is gone, re-created at 0');

# --- 2. Restart without data; publish right away.

$redis->stop;
$offset = -s $node->logfile;
$redis->start;
is($redis->cli('XLEN', $stream), '0',
	'Redis came back empty (the stream is gone)');
my $id_restart = publish($redis);
my $reconnected_before = $node->log_contains(qr/connected to Redis/, $offset);
note $reconnected_before
  ? 'the worker had reconnected before the entry was published'
  : 'the entry was published before the worker reconnected';
ok(stored($node, $id_restart),
	'the entry published right after the empty restart lands');
ok($node->log_contains(qr/connected to Redis 127\.0\.0\.1:\d+/, $offset),
	'logged: reconnected to Redis');
ok( $node->log_contains(
		qr/consumer group "processor" on "telemetry:t" ready/, $offset),
	'logged: consumer group ready again');

# --- 3. An outage of ~3 s.

my @before_outage = map { publish($redis) } 1 .. 3;
ok(stored($node, @before_outage),
	'the entries published before the outage landed');
ok(poll_until(sub { pending_count($redis) == 0 }),
	'and were acknowledged before the outage');

$redis->stop;
my $down_at = time();
ok( poll_until(
		sub { worker_stat($node, 'redis_connected') eq 'f' }, timeout => 10),
	'while Redis is down: redis_connected = false');
note 'status while Redis is down: ' . worker_stat($node, 'status');
usleep(100_000) while time() - $down_at < 3;
$offset = -s $node->logfile;
$redis->start;
my @after_outage = map { publish($redis) } 1 .. 3;
note $node->log_contains(qr/connected to Redis/, $offset)
  ? 'the worker had reconnected before the entries were published'
  : 'the entries were published before the worker reconnected';
ok(stored($node, @after_outage),
	'the entries published right after the outage landed');

# --- Everything, once; the same worker.

is($node->safe_psql('postgres', 'SELECT count(*) FROM public.positions'),
	scalar(@published),
	'every published entry stored (' . scalar(@published) . ')');
is( $node->safe_psql(
		'postgres',
		q{SELECT string_agg(stream_id, ' ' ORDER BY stream_id COLLATE "C")
		  FROM public.positions}),
	join(' ', sort @published),
	'stored stream ids = the published ids, each once');
ok(poll_until(sub { pending_count($redis) == 0 }), 'nothing pending');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.positions_dead_letter'),
	'0', 'no dead letters');
is(worker_stat($node, 'pid'), $pid, 'the worker pid never changed (stats)');
is( $node->safe_psql(
		'postgres',
		q{SELECT string_agg(pid::text, ',') FROM pg_stat_activity
		  WHERE backend_type = 'processor'}),
	$pid,
	'the worker pid never changed (pg_stat_activity)');
cmp_ok(worker_stat($node, 'redis_reconnects'), '>=', 2,
	'redis_reconnects counts the reconnects');
ok(!$node->log_contains(qr/background worker "processor" \(PID \d+\) exited/),
	'the worker never exited');

$node->stop;
$redis->stop;

done_testing();
