# 050_waits_without_crash_loop.pl: the worker never crash-loops on
# something missing (SPEC §3, §4 "Redis down"); it waits in place, same
# process, logging at most once per backoff step, and proceeds as soon as
# the missing piece appears:
#
# (a) no CREATE EXTENSION yet: one "is waiting for the extension" line
#     over ~3 s, the same pid, no "exited with exit code" line;
# (b) Redis not running: "could not connect to Redis" at most once per
#     backoff step (retry_min 50ms, retry_max 1s: 50, 100, 200, 400, 800,
#     1000 ... ms, so at most 7 attempts in 3 s), same pid;
#     Redis started on that port → entries land;
# (c) the target table's schema missing (processor.target_table =
#     'app.positions', set by a reload): the log names the schema, nothing
#     is consumed; CREATE SCHEMA app (no reload: the check is retried on
#     every backoff step) → the table is created and the entries land.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use RedisServer;
use ProcessorTest;

my $stream = 'telemetry:t';

# A port with nothing listening: RedisServer reserves it, then stops.
my $redis = RedisServer->new;
$redis->stop;

my $node = new_node('waits', redis => $redis);

my $pid;
ok( poll_until(
		sub {
			$pid = $node->safe_psql('postgres',
				q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'processor'});
			return $pid =~ /^\d+$/;
		}),
	'worker running');

sub worker_pid
{
	return $node->safe_psql('postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'processor'});
}

my $exited = qr/background worker "processor" \(PID \d+\) exited/;

# --- (a) Waiting for CREATE EXTENSION.

usleep(3_000_000);
is(count_log($node, qr/processor worker 1 is waiting for the extension in database "postgres"/),
	1, 'waiting for the extension: one log line over 3 s');
is(worker_pid(), $pid, 'same worker pid while waiting for the extension');
is(count_log($node, $exited), 0, 'no worker exit in the log');

# --- (b) Redis not running.

my $offset = -s $node->logfile;
my $t0 = time();
$node->safe_psql('postgres', 'CREATE EXTENSION processor');
usleep(3_000_000);
my $connect_failures =
  count_log($node, qr/processor worker 1: could not connect to Redis 127\.0\.0\.1:/,
	$offset);
my $limit = max_failures(time() - $t0);
note sprintf('%d connection failures logged in %.1f s (at most %d allowed)',
	$connect_failures, time() - $t0, $limit);
cmp_ok($connect_failures, '>=', 1, 'Redis down: the failure is logged');
cmp_ok($connect_failures, '<=', $limit,
	'Redis down: at most one line per backoff step (no busy loop)');
is(worker_pid(), $pid, 'same worker pid while Redis is down');
is(count_log($node, $exited), 0, 'no worker exit in the log');

$redis->start;
my $id_b = $redis->xadd(
	$stream,
	device_id => 'after-redis',
	ts => '1767225600000',
	lat => '1',
	lon => '2');
ok( wait_for_rows(
		$node, q{SELECT count(*) FROM public.positions WHERE device_id = 'after-redis'},
		'1'),
	'Redis started on that port: the entry lands');
ok(poll_until(sub { pending_count($redis) == 0 }), 'nothing pending');
is(worker_pid(), $pid, 'same worker pid after Redis came up');

# --- (c) The target table's schema is missing.

$offset = -s $node->logfile;
$node->safe_psql('postgres',
	q{ALTER SYSTEM SET processor.target_table = 'app.positions'});
$t0 = time();
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
ok( $node->wait_for_log(
		qr/processor worker 1: schema "app" of table "positions" does not exist/,
		$offset),
	'missing schema: the log names it');

my $id_c = $redis->xadd(
	$stream,
	device_id => 'after-schema',
	ts => '1767225600000',
	lat => '1',
	lon => '2');
usleep(2_000_000);
my $g = stream_groups($redis, $stream)->{processor};
is($g->{'last-delivered-id'}, $id_b,
	'while the schema is missing nothing is read from the stream');
is($node->safe_psql('postgres',
		q{SELECT count(*) FROM public.positions WHERE device_id = 'after-schema'}),
	'0', 'nor stored in the old target');
my $schema_lines = count_log($node, qr/schema "app" of table "positions" does not exist/,
	$offset);
$limit = max_failures(time() - $t0);
cmp_ok($schema_lines, '<=', $limit,
	"missing schema logged once per backoff step ($schema_lines lines, at most $limit)"
);
is(worker_pid(), $pid, 'same worker pid while the schema is missing');

$node->safe_psql('postgres', 'CREATE SCHEMA app');
ok( wait_for_rows(
		$node, q{SELECT count(*) FROM app.positions WHERE device_id = 'after-schema'},
		'1'),
	'CREATE SCHEMA app (no reload): the table is created and the entry lands');
ok($node->log_contains(qr/processor created table "app\.positions"/, $offset),
	'the log says the table was created');
ok(poll_until(sub { pending_count($redis) == 0 }), 'nothing pending');

is(worker_pid(), $pid, 'one worker process from start to end');
is(count_log($node, $exited), 0, 'no worker exit in the whole log');

$node->stop;
$redis->stop;

done_testing();
