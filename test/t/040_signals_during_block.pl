# 040_signals_during_block.pl: signals are served while the worker waits in
# XREADGROUP ... BLOCK (SPEC §3: every wait goes through WaitLatchOrSocket).
#
# With processor.block_time = 10s and an idle stream, the worker sits in a
# blocked XREADGROUP (Redis lists its client with flag "b").  Then:
# - SIGTERM makes it exit within a second (it goes through die, exit
#   code 1), and the postmaster starts it again after the 5 s restart
#   interval (a new pid in pg_stat_activity);
# - a reload (SIGHUP) that changes processor.stream during the block is
#   served at once: an entry added to the new stream lands within 2 s,
#   far less than the 10 s the block would otherwise last.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use RedisServer;
use ProcessorTest;

my $redis = RedisServer->new;
my $node = new_node(
	'block',
	redis => $redis,
	'processor.block_time' => '10s');

# The worker's pid from pg_stat_activity ('' when it is not running).
sub worker_pid
{
	return $node->safe_psql('postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'processor'});
}

# The Redis clients blocked in XREADGROUP: a list of { field => value }
# from CLIENT LIST (idle: seconds since the command was sent).
sub blocked_readers
{
	my @clients;
	foreach my $line (split /\n/, $redis->cli('CLIENT', 'LIST'))
	{
		my %c = map { /^([^=]+)=(.*)$/ ? ($1, $2) : () } split / /, $line;
		push @clients, \%c
		  if ($c{cmd} // '') eq 'xreadgroup' && ($c{flags} // '') =~ /b/;
	}
	return @clients;
}

# Wait until the worker is in a blocked XREADGROUP that began at most a
# second ago, so that at least 9 s of its 10 s block remain.
sub wait_for_fresh_block
{
	return poll_until(
		sub {
			my @b = blocked_readers();
			return @b == 1 && $b[0]{idle} <= 1;
		});
}

$node->safe_psql('postgres', 'CREATE EXTENSION processor');
$node->wait_for_log(qr/processor ready/);

# --- SIGTERM during the block.

ok(wait_for_fresh_block(), 'worker blocked in XREADGROUP (10 s block)');
my $pid = worker_pid();
like($pid, qr/^\d+$/, "worker pid $pid");
my $log_offset = -s $node->logfile;

my $t0 = time();
kill 'TERM', $pid;
ok(poll_until(sub { !kill(0, $pid) }, timeout => 15), 'worker exited');
my $exit_time = time() - $t0;
note sprintf('exited %.3f s after SIGTERM', $exit_time);
cmp_ok($exit_time, '<', 1.0, 'SIGTERM during a 10 s block served within 1 s');

ok( $node->wait_for_log(
		qr/background worker "processor" \(PID $pid\) exited with exit code 1/,
		$log_offset),
	'exit code 1 (die): the postmaster will restart it');

# --- It comes back after the restart interval.

my $new_pid;
ok( poll_until(
		sub {
			$new_pid = worker_pid();
			return $new_pid =~ /^\d+$/ && $new_pid != $pid;
		},
		timeout => 30),
	'the worker is back (new pid in pg_stat_activity)');
my $back_time = time() - $t0;
note sprintf('back %.3f s after SIGTERM, pid %s', $back_time, $new_pid);
cmp_ok($back_time, '>=', 4.5, 'not before the 5 s restart interval');
cmp_ok($back_time, '<', 15, 'soon after the restart interval');

# --- SIGHUP during the block: a new stream is consumed at once.

ok(wait_for_fresh_block(), 'the new worker is blocked in XREADGROUP');
is(worker_pid(), $new_pid, 'still the same worker');

$node->safe_psql('postgres',
	q{ALTER SYSTEM SET processor.stream = 'block:other'});
# The server's clock when the reload was signalled; compared below with the
# row's received_at (the worker's transaction start), so that the time this
# script takes to poll does not count.
my (undef, $reload_at) = split /\|/,
  $node->safe_psql('postgres', 'SELECT pg_reload_conf(), clock_timestamp()');
my $id = $redis->xadd(
	'block:other',
	device_id => 'after-reload',
	ts => '1767225600000',
	lat => '1',
	lon => '2');
ok( wait_for_rows(
		$node,
		q{SELECT count(*) FROM public.positions WHERE device_id = 'after-reload'},
		'1'),
	'entry on the new stream stored');
my $land_time = $node->safe_psql(
	'postgres',
	qq{SELECT extract(epoch FROM received_at - '$reload_at'::timestamptz)
	   FROM public.positions WHERE device_id = 'after-reload'});
note "stored $land_time s after the reload";
cmp_ok($land_time, '<', 2.0,
	'a reload during a 10 s block is served at once (row within 2 s)');
is(worker_pid(), $new_pid, 'no restart was needed for the reload');

$node->stop;
$redis->stop;

done_testing();
