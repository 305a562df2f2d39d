# 030_sighup_stream_switch.pl: changing processor.stream with a reload
# (SIGHUP, no restart) moves the worker to the new stream (SPEC §3):
# entries on the old stream A land; after ALTER SYSTEM SET processor.stream
# and pg_reload_conf() the group is created on the new stream B and its
# entries land; entries added to A afterwards are left alone: still in the
# stream, never delivered to the group on A (they count as its lag).

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

use RedisServer;
use ProcessorTest;

my $stream_a = 'switch:A';
my $stream_b = 'switch:B';

sub position
{
	my ($device) = @_;
	return (
		device_id => $device,
		ts => '1767225600000',
		lat => '1',
		lon => '2');
}

my $redis = RedisServer->new;
my $node = new_node('switch', redis => $redis, 'processor.stream' => $stream_a);
$node->safe_psql('postgres', 'CREATE EXTENSION processor');

# --- Stream A.

my $id_a1 = $redis->xadd($stream_a, position('on-a-1'));
ok( wait_for_rows(
		$node, q{SELECT count(*) FROM public.positions WHERE device_id = 'on-a-1'},
		'1'),
	'entry on stream A lands');
ok(poll_until(sub { pending_count($redis, $stream_a) == 0 }),
	'nothing pending on A');
ok(exists stream_groups($redis, $stream_a)->{processor},
	'group "processor" exists on A');
is($redis->cli('EXISTS', $stream_b), '0', 'stream B does not exist yet');

# --- Switch to B with a reload.

my $worker_pid = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'processor'});
my $log_offset = -s $node->logfile;

$node->safe_psql('postgres',
	"ALTER SYSTEM SET processor.stream = '$stream_b'");
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');

ok( poll_until(
		sub { $redis->cli('EXISTS', $stream_b) eq '1'
			  && exists stream_groups($redis, $stream_b)->{processor} }),
	'after the reload, group "processor" exists on B (XINFO GROUPS B)');
ok( $node->wait_for_log(
		qr/consumer group "processor" on "\Q$stream_b\E" ready/, $log_offset),
	'the log says the group on B is ready');

my $id_b1 = $redis->xadd($stream_b, position('on-b-1'));
ok( wait_for_rows(
		$node, q{SELECT count(*) FROM public.positions WHERE device_id = 'on-b-1'},
		'1'),
	'entry on stream B lands');
is( $node->safe_psql(
		'postgres',
		q{SELECT stream_id FROM public.positions WHERE device_id = 'on-b-1'}),
	$id_b1,
	'its stream_id is the id on B');
ok(poll_until(sub { pending_count($redis, $stream_b) == 0 }),
	'nothing pending on B');

# --- A is no longer consumed.

my $id_a2 = $redis->xadd($stream_a, position('on-a-2'));
# A barrier: once an entry on B added after it has landed, the worker has
# had every chance to read A; then a few more polling rounds
# (processor.block_time is 100ms in tests).
my $id_b2 = $redis->xadd($stream_b, position('on-b-2'));
ok( wait_for_rows(
		$node, q{SELECT count(*) FROM public.positions WHERE device_id = 'on-b-2'},
		'1'),
	'a later entry on B lands');
usleep(1_000_000);

is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) FROM public.positions WHERE device_id = 'on-a-2'}),
	'0',
	'entry added to A after the switch is not stored');
my $ga = stream_groups($redis, $stream_a)->{processor};
is($ga->{'last-delivered-id'}, $id_a1,
	'group on A has not delivered the new entry (last-delivered-id unchanged)');
is($ga->{pending}, '0', 'nothing pending on A');
is($ga->{lag}, '1', 'group on A: lag 1 (the new entry is not yet delivered)');
is($redis->cli('XLEN', $stream_a), '2', 'the entry is still in stream A');

is( $node->safe_psql(
		'postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'processor'}),
	$worker_pid,
	'the switch needed no restart of the worker (same pid)');

$node->stop;
$redis->stop;

done_testing();
