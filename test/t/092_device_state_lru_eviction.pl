
# 092_device_state_lru_eviction.pl: with processor.max_devices = 100, 150
# devices leave the 100 most recently updated in shared memory and
# evicted_total = 50 (SPEC §5).  Recency is "last updated", not "first
# seen": a device refreshed before the others arrive survives, and the
# least recently updated ones go.  An evicted device that comes back starts
# over (positions_seen 1).

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;

use RedisServer;
use ProcessorTest;

my $redis = RedisServer->new;
my $node = new_node('lru', redis => $redis, 'processor.max_devices' => 100);
$node->safe_psql('postgres', 'CREATE EXTENSION processor');

# dev001 .. dev100 fill the table.
my @fill = map {
	[ 'XADD', 'telemetry:t', '*', device_id => sprintf('dev%03d', $_),
	  ts => 1000 + $_, lat => '1', lon => '2' ]
} 1 .. 100;
$redis->pipeline(@fill);
ok( wait_for_rows(
		$node, 'SELECT devices, capacity, evicted_total FROM processor.state_info()',
		'100|100|0'),
	'100 devices fill a table of capacity 100, nothing evicted');

# dev001 gets a new position: it becomes the most recently updated.
$redis->xadd('telemetry:t', device_id => 'dev001', ts => '5000',
	lat => '1', lon => '2');
ok(wait_for_rows($node,
		q{SELECT positions_seen FROM processor.device('dev001')}, '2'),
	'dev001 refreshed');

# dev101 .. dev150 evict the 50 least recently updated: dev002 .. dev051.
my @more = map {
	[ 'XADD', 'telemetry:t', '*', device_id => sprintf('dev%03d', $_),
	  ts => 1000 + $_, lat => '1', lon => '2' ]
} 101 .. 150;
$redis->pipeline(@more);
ok( wait_for_rows(
		$node, 'SELECT devices, capacity, evicted_total FROM processor.state_info()',
		'100|100|50'),
	'150 devices: 100 remain, evicted_total = 50');

my $expected = join(',', 'dev001', map { sprintf('dev%03d', $_) } 52 .. 150);
is( $node->safe_psql(
		'postgres',
		'SELECT string_agg(device_id, \',\' ORDER BY device_id) FROM processor.devices()'),
	$expected,
	'the 100 most recently updated remain (dev001 refreshed, dev052..dev150)');
is( $node->safe_psql(
		'postgres', q{SELECT count(*) FROM processor.device('dev002')}),
	'0',
	'an evicted device is gone from device(text) too');

# Every position still reached the table: eviction is about memory only.
ok(wait_for_rows($node, 'SELECT count(*) FROM public.positions', '151'),
	'all 151 positions inserted');

# An evicted device that comes back starts over, evicting one more.
$redis->xadd('telemetry:t', device_id => 'dev002', ts => '6000',
	lat => '1', lon => '2');
ok( wait_for_rows(
		$node, 'SELECT evicted_total FROM processor.state_info()', '51'),
	'a returning device evicts the least recently updated one');
is( $node->safe_psql(
		'postgres',
		q{SELECT positions_seen FROM processor.device('dev002')}),
	'1',
	'a returning device starts over');
is( $node->safe_psql(
		'postgres', q{SELECT count(*) FROM processor.device('dev052')}),
	'0',
	'dev052, now the least recently updated, was evicted');

# reset_stats zeroes evicted_total and keeps the devices.
$node->safe_psql('postgres', 'SELECT processor.reset_stats()');
is( $node->safe_psql(
		'postgres', 'SELECT devices, capacity, evicted_total FROM processor.state_info()'),
	'100|100|0',
	'reset_stats zeroes evicted_total and keeps the devices');
is($node->safe_psql('postgres', 'SELECT count(*) FROM processor.device_state'),
	'100', 'device_state still lists 100 devices');

$node->stop;
$redis->stop;
done_testing();
