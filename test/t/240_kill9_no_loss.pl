# 240_kill9_no_loss.pl: kill -9 of the worker while entries are surely
# pending loses nothing and stores nothing twice (issue 4, test 3; SPEC §4:
# commit, then XACK; resumption reads the consumer's own pending entries
# first).
#
# Another session holds a SHARE lock on the target, so the worker's INSERT
# waits while 30 000 entries are published (in one MULTI/EXEC, so that the
# worker's read takes a full batch of 500): the worker has read a batch
# (XPENDING > 0) and waits on the lock when it is killed with SIGKILL.  The
# postmaster then restarts every backend (the lock holder's session goes
# too), and the worker comes back: every entry is in the table exactly
# once (count = count(DISTINCT stream_id) = 30 001, the stream's ids) and
# nothing is pending.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

use RedisServer;
use ProcessorTest;

my $stream = 'telemetry:t';
my $total = 30_000;

my $redis = RedisServer->new;
my $node = new_node(
	'kill9',
	redis => $redis,
	'processor.batch_size' => 500,
	restart_after_crash => 'on');

$node->safe_psql('postgres', 'CREATE EXTENSION processor');

# The target must exist before it can be locked: one entry first.
my $id_first = $redis->xadd($stream,
	device_id => 'first',
	ts => '1767225600000',
	lat => '1',
	lon => '2');
ok(wait_for_rows($node, 'SELECT count(*) FROM public.positions', '1'),
	'first entry landed (the target exists)');
ok(poll_until(sub { pending_count($redis) == 0 }), 'and was acknowledged');

my $locker = $node->background_psql('postgres', on_error_stop => 0);
$locker->query_safe('BEGIN; LOCK TABLE public.positions IN SHARE MODE;');
note 'SHARE lock held on public.positions';

my @commands;
for my $i (1 .. $total)
{
	my $device = 'dev-' . ($i % 100);
	my $ts = 1767225600000 + $i;
	push @commands,
	  ($i % 2)
	  ? [
		'XADD', $stream, '*', 'device_id', $device, 'ts', $ts,
		'lat', '52.1', 'lon', '4.9'
	  ]
	  : [
		'XADD', $stream, '*', 'payload',
		qq({"device_id":"$device","ts":$ts,"lat":52.1,"lon":4.9,"speed":$i})
	  ];
}
# In one MULTI/EXEC: the worker's blocked read then takes a full batch.
$redis->pipeline(['MULTI'], @commands, ['EXEC']);
is($redis->cli('XLEN', $stream), $total + 1, "$total entries published");

# The worker has read a batch and waits for the lock.
my $worker_pid;
ok( poll_until(
		sub {
			$worker_pid = $node->safe_psql('postgres',
				q{SELECT pid FROM pg_stat_activity
				  WHERE backend_type = 'processor' AND wait_event_type = 'Lock'});
			$worker_pid =~ /^\d+$/ && pending_count($redis) > 0;
		}),
	'the worker waits on the lock with a batch read');
my $pending = pending_count($redis);
cmp_ok($pending, '>', 0, "XPENDING = $pending before the kill");
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.positions'),
	'1', 'nothing of the batch committed');

my $log_offset = -s $node->logfile;
is(kill('KILL', $worker_pid), 1, "worker (pid $worker_pid) killed with SIGKILL");

# Release the lock, if the session is still there: the postmaster restarts
# every backend after the worker's crash, the lock holder's too.
ok( poll_until(
		sub {
			$node->log_contains(qr/all server processes terminated; reinitializing/,
				$log_offset);
		}),
	'the postmaster restarted all backends after the crash');
eval { $locker->query('COMMIT') };
eval { $locker->quit };

ok( wait_for_rows(
		$node, 'SELECT count(*) FROM public.positions', $total + 1),
	'every entry stored after the crash restart');
ok(poll_until(sub { pending_count($redis) == 0 }),
	'nothing pending in the group');

my $new_pid = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'processor'});
ok($new_pid =~ /^\d+$/ && $new_pid != $worker_pid,
	"a new worker runs (pid $new_pid)");

is( $node->safe_psql(
		'postgres',
		'SELECT count(*), count(DISTINCT stream_id), count(DISTINCT (device_id, ts))
		 FROM public.positions'),
	join('|', ($total + 1) x 3),
	'each entry exactly once');

my @ids = grep { /^\d+-\d+$/ } split /\n/,
  $redis->cli('XRANGE', $stream, '-', '+');
is(scalar(@ids), $total + 1, 'XRANGE lists every id');
is( $node->safe_psql(
		'postgres',
		q{SELECT string_agg(stream_id, E'\n' ORDER BY stream_id COLLATE "C")
		  FROM public.positions}),
	join("\n", sort @ids),
	'stored stream ids = the stream\'s ids');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.positions_dead_letter'),
	'0', 'no dead letters');

$node->stop;
$redis->stop;

done_testing();
