# 280_redis_paused_mid_batch.pl: a Redis that stops answering in the
# middle of the flow (a half-open connection, as seen from the worker) is
# detected, the connection dropped and re-opened, and no entry is lost or
# stored twice (issue 4, test 4, second half; SPEC §3: "a reply that has not
# arrived processor.block_time + processor.redis_timeout after its command
# was sent means a dead connection: drop it, reconnect"; SPEC §4: Redis
# down).
#
# processor.redis_timeout = 5s, processor.block_time = 100ms.  The load
# generator publishes 2 000 entries at 250/s; once entries are landing,
# "DEBUG SLEEP 12" from another redis-cli freezes the whole Redis server
# for 12 s (> 5.1 s), with the worker's command (XREADGROUP, XACK, ...)
# outstanding.  The publisher stalls too and catches up afterwards.  Then:
#
# - the log shows "no reply from Redis within N ms" (e.g. "processor
#   worker 1: XREADGROUP failed: no reply from Redis within 5100 ms"),
#   after redis_timeout but before the sleep ends
#   (the worker did not just wait for the reply);
# - the worker reconnects ("connected to Redis" again, redis_reconnects
#   grows), with the same pid;
# - every entry published before, during and after lands exactly once:
#   count = count(DISTINCT stream_id) = XLEN = what loadgen sent, and the
#   stored ids are the stream's ids; nothing pending, no dead letters.

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use RedisServer;
use ProcessorTest;

my $stream = 'telemetry:t';
my $total = 2000;
my $sleep_s = 12;

my $loadgen = build_loadgen();

# Redis 7 refuses DEBUG unless enabled.
my $redis = RedisServer->new(args => [ '--enable-debug-command', 'yes' ]);
my $node = new_node(
	'paused',
	redis => $redis,
	'processor.redis_timeout' => '5s',
	'processor.block_time' => '100ms',
	'processor.batch_size' => 100);

$node->safe_psql('postgres', 'CREATE EXTENSION processor');
ok( worker_running($node),
	'worker running');
my $pid = worker_stat($node, 'pid');
like($pid, qr/^\d+$/, "worker pid $pid");
my $reconnects0 = worker_stat($node, 'redis_reconnects');

# --- Entries flow.

my ($lg_out, $lg_err) = ('', '');
my $lg = IPC::Run::start(
	[
		$loadgen, '--quiet', '--port', $redis->port,
		'--count', $total, '--rate', '250', '--encoding', 'mixed',
		'--pipeline', '10', '--no-attributes'
	],
	'<', \undef, '>', \$lg_out, '2>', \$lg_err);

ok( poll_until(
		sub {
			$node->safe_psql('postgres', 'SELECT count(*) FROM public.positions')
			  >= 200;
		}),
	'entries are landing');

# --- Redis freezes.

my $offset = -s $node->logfile;
my ($sl_out, $sl_err) = ('', '');
my $sleep_started = time();
my $sleeper = IPC::Run::start(
	[ 'redis-cli', '-h', $redis->host, '-p', $redis->port, 'DEBUG', 'SLEEP', $sleep_s ],
	'<', \undef, '>', \$sl_out, '2>', \$sl_err);
note "DEBUG SLEEP $sleep_s sent";
my $during = $node->safe_psql('postgres', 'SELECT count(*) FROM public.positions');

my $detected_at;
ok( poll_until(
		sub {
			return 0
			  unless $node->log_contains(
				qr/processor worker 1: .*no reply from Redis within \d+ ms/, $offset);
			$detected_at = time();
			return 1;
		},
		timeout => $sleep_s + 20),
	'logged: no reply from Redis within ... ms');
my $detect_s = defined $detected_at ? $detected_at - $sleep_started : -1;
note sprintf('detected %.1f s after DEBUG SLEEP', $detect_s);
cmp_ok($detect_s, '<', $sleep_s,
	"detected while Redis was still frozen (within $sleep_s s)");
cmp_ok($detect_s, '>=', 4.5,
	'not before redis_timeout (5 s) had passed');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.positions'),
	$during, 'nothing stored while Redis is frozen');
ok(worker_stat($node, 'redis_connected') eq 'f'
	  || worker_stat($node, 'status') ne 'running',
	'the worker reports the lost connection (redis_connected false or status not running)');

$sleeper->finish;
chomp $sl_out;
is($sl_out, 'OK', "DEBUG SLEEP returned OK after ~$sleep_s s")
  or diag "redis-cli: $sl_out $sl_err";
note sprintf('DEBUG SLEEP took %.1f s', time() - $sleep_started);

# --- Publishing catches up; the worker reconnects.

$lg->finish;
is($?, 0, 'loadgen exited 0') or diag "loadgen: $lg_out $lg_err";
note "loadgen: $lg_out";
my ($sent) = $lg_out =~ /\bsent=(\d+)/;
my ($rows) = $lg_out =~ /\brows=(\d+)/;
is($sent, $total, "loadgen sent $total");
is($rows, $total, 'every entry sent is a distinct row');
is($redis->cli('XLEN', $stream), $total, 'the stream holds them all');

ok( wait_for_rows(
		$node,
		'SELECT count(*) || \'/\' || count(DISTINCT stream_id) || \'/\'
		        || count(DISTINCT (device_id, ts)) FROM public.positions',
		"$total/$total/$total"),
	'every entry stored exactly once');
ok(poll_until(sub { pending_count($redis) == 0 }), 'nothing pending');

my @ids = grep { /^\d+-\d+$/ } split /\n/,
  $redis->cli('XRANGE', $stream, '-', '+');
is( $node->safe_psql(
		'postgres',
		q{SELECT string_agg(stream_id, E'\n' ORDER BY stream_id COLLATE "C")
		  FROM public.positions}),
	join("\n", sort @ids),
	'stored stream ids = the stream\'s ids');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.positions_dead_letter'),
	'0', 'no dead letters');
ok( $node->log_contains(qr/connected to Redis 127\.0\.0\.1:\d+/, $offset),
	'logged: connected to Redis again');
cmp_ok(worker_stat($node, 'redis_reconnects'), '>', $reconnects0,
	'redis_reconnects grew');
is(worker_stat($node, q{status || ' ' || redis_connected}), 'running true',
	'running and connected again');
is( $node->safe_psql(
		'postgres',
		q{SELECT string_agg(pid::text, ',') FROM pg_stat_activity
		  WHERE backend_type = 'processor'}),
	$pid,
	'the same worker throughout');
ok(!$node->log_contains(qr/background worker "processor" \(PID \d+\) exited/),
	'the worker never exited');
note 'duplicates counted (redeliveries): ' . worker_stat($node, 'duplicates');

$node->stop;
$redis->stop;

done_testing();
