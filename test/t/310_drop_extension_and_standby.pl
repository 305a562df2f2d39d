# 310_drop_extension_and_standby.pl: DROP EXTENSION / CREATE EXTENSION
# while entries flow, and a standby that runs no worker until it is
# promoted (issue 4, test 8; SPEC §3: "after DROP EXTENSION it stops
# consuming and waits again, without blocking the DDL", "never on a
# standby"; §2: DROP EXTENSION never drops data).
#
# (a) The load generator publishes 1 500 entries at 150/s.  Once entries
#     land, DROP EXTENSION processor: it completes in under 5 s (the
#     worker does not block it); the worker logs "is waiting for the
#     extension", keeps its pid (no crash loop, no exit) and stops storing
#     while the stream keeps growing; the tables and their rows survive.
#     CREATE EXTENSION again: consumption resumes and every published entry
#     is stored exactly once, nothing pending, no dead letters.
# (b) A streaming standby built from a backup of that primary, with the same
#     configuration (processor preloaded, same Redis): no processor backend
#     in its pg_stat_activity for 3 s and no "processor worker 1 starting"
#     in its log.  The primary is stopped, the standby promoted: a processor
#     worker starts there, and entries published after the promotion land
#     in it.

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use RedisServer;
use ProcessorTest;

my $stream = 'telemetry:t';
my $total = 1500;

my $loadgen = build_loadgen();

sub count_rows
{
	my ($node) = @_;
	return $node->safe_psql('postgres', 'SELECT count(*) FROM public.positions');
}

sub worker_pids
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		q{SELECT coalesce(string_agg(pid::text, ','), '') FROM pg_stat_activity
		  WHERE backend_type = 'processor'});
}

my $redis = RedisServer->new;
my $primary = new_node(
	'primary',
	redis => $redis,
	'processor.batch_size' => 100,
	wal_level => 'replica',
	max_wal_senders => 10,
	hot_standby => 'on');

$primary->safe_psql('postgres', 'CREATE EXTENSION processor');
ok( worker_running($primary),
	'worker running');
my $pid = worker_pids($primary);
like($pid, qr/^\d+$/, "worker pid $pid");

# --- (a) DROP / CREATE EXTENSION while entries flow.

my ($lg_out, $lg_err) = ('', '');
my $lg = IPC::Run::start(
	[
		$loadgen, '--quiet', '--port', $redis->port,
		'--count', $total, '--rate', '150', '--encoding', 'mixed',
		'--pipeline', '10', '--no-attributes'
	],
	'<', \undef, '>', \$lg_out, '2>', \$lg_err);

ok(poll_until(sub { count_rows($primary) >= 100 }), 'entries are landing');

my $offset = -s $primary->logfile;
my $t0 = time();
$primary->safe_psql('postgres', 'DROP EXTENSION processor');
my $drop_s = time() - $t0;
note sprintf('DROP EXTENSION took %.3f s', $drop_s);
cmp_ok($drop_s, '<', 5, 'DROP EXTENSION completes quickly (not blocked by the worker)');

ok( poll_until(
		sub {
			$primary->log_contains(
				qr/processor worker 1 is waiting for the extension in database "postgres"/,
				$offset);
		},
		timeout => 10),
	'logged: the worker is waiting for the extension');

# The worker stands aside: nothing more is stored while the stream grows.
my $rows_after_drop = count_rows($primary);
my $xlen_after_drop = $redis->cli('XLEN', $stream);
usleep(2_000_000);
is(count_rows($primary), $rows_after_drop, 'no entry stored without the extension');
cmp_ok($redis->cli('XLEN', $stream), '>', $xlen_after_drop,
	'while entries keep arriving in Redis');
is(worker_pids($primary), $pid, 'the same worker pid (no crash loop)');
ok(!$primary->log_contains(qr/background worker "processor[^"]*" \(PID \d+\) exited/,
		$offset), 'the worker did not exit');
is( $primary->safe_psql(
		'postgres',
		q{SELECT count(*) FROM pg_stat_activity
		  WHERE backend_type = 'processor' AND wait_event_type = 'Lock'}),
	'0', 'the worker waits on no lock');
is( $primary->safe_psql(
		'postgres',
		q{SELECT to_regclass('public.positions') IS NOT NULL
		     AND to_regclass('public.positions_dead_letter') IS NOT NULL}),
	't', 'DROP EXTENSION kept the tables');

$primary->safe_psql('postgres', 'CREATE EXTENSION processor');
ok( poll_until(sub { count_rows($primary) > $rows_after_drop }, timeout => 10),
	'after CREATE EXTENSION, consumption resumes');

$lg->finish;
is($?, 0, 'loadgen exited 0') or diag "loadgen: $lg_out $lg_err";
note "loadgen: $lg_out";
my ($sent) = $lg_out =~ /\bsent=(\d+)/;
my ($rows) = $lg_out =~ /\brows=(\d+)/;
is($sent, $total, "loadgen sent $total");
is($rows, $total, 'every entry sent is a distinct row');

ok( wait_for_rows(
		$primary,
		q{SELECT count(*) || '/' || count(DISTINCT stream_id) FROM public.positions},
		"$total/$total"),
	'every published entry stored exactly once');
ok(poll_until(sub { pending_count($redis) == 0 }), 'nothing pending');
my @ids = grep { /^\d+-\d+$/ } split /\n/,
  $redis->cli('XRANGE', $stream, '-', '+');
is( $primary->safe_psql(
		'postgres',
		q{SELECT string_agg(stream_id, E'\n' ORDER BY stream_id COLLATE "C")
		  FROM public.positions}),
	join("\n", sort @ids),
	'stored stream ids = the stream\'s ids');
is($primary->safe_psql('postgres', 'SELECT count(*) FROM public.positions_dead_letter'),
	'0', 'no dead letters');
is(worker_pids($primary), $pid, 'the same worker throughout');

# --- (b) A standby runs no worker; after promotion it does.

$primary->backup('b1');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b1', has_streaming => 1);
$standby->start;
$primary->wait_for_catchup($standby);
is(count_rows($standby), $total, 'the standby replays the rows');
is( $standby->safe_psql('postgres',
		q{SELECT pg_is_in_recovery() AND current_setting('shared_preload_libraries') = 'processor'}),
	't', 'standby in recovery, with processor preloaded');

my $worker_seen = 0;
my $t1 = time();
while (time() - $t1 < 3)
{
	$worker_seen = 1 if worker_pids($standby) ne '';
	usleep(200_000);
}
ok(!$worker_seen, 'no processor backend on the standby for 3 s');
ok(!$standby->log_contains(qr/processor worker 1 starting/),
	'no "processor worker 1 starting" in the standby\'s log');
is( $standby->safe_psql('postgres',
		q{SELECT count(*) FROM processor.stats() WHERE pid IS NULL AND status = 'stopped'}),
	'1', 'on the standby, processor.stats() says stopped');

$primary->stop;
my $soffset = -s $standby->logfile;
$standby->promote;
ok( poll_until(sub { worker_pids($standby) =~ /^\d+$/ }),
	'after promotion, a processor worker runs');
ok($standby->log_contains(qr/processor worker 1 starting/, $soffset),
	'logged: processor worker 1 starting');
ok( worker_running($standby),
	'the promoted server\'s worker is running');

my @after;
for my $i (1 .. 5)
{
	push @after,
	  $redis->xadd($stream,
		device_id => 'after-promotion',
		ts => 1767225600000 + $i,
		lat => '1',
		lon => '2');
}
ok( wait_for_rows(
		$standby,
		q{SELECT string_agg(stream_id, ' ' ORDER BY stream_id COLLATE "C")
		  FROM public.positions WHERE device_id = 'after-promotion'},
		join(' ', sort @after)),
	'entries published after promotion land in the promoted server');
ok(poll_until(sub { pending_count($redis) == 0 }), 'nothing pending');
is(count_rows($standby), $total + 5, 'every row, once');

$standby->stop;
$redis->stop;

done_testing();
