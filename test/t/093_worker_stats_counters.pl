
# 093_worker_stats_counters.pl: after a known mix of valid, duplicate and
# invalid entries, processor.stats() counts exactly what the target table
# and the dead-letter table hold (SPEC §6: inserted, duplicates,
# dead_lettered and batches move only after COMMIT, entries_read on every
# read).  reset_stats() zeroes the counters and evicted_total, moves
# stats_reset forward, and keeps the devices.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;

use RedisServer;
use ProcessorTest;

my $redis = RedisServer->new;
my $node = new_node('counters', redis => $redis);
$node->safe_psql('postgres', 'CREATE EXTENSION processor');
ok(wait_for_rows($node, 'SELECT status FROM processor.stats()', 'running'),
	'worker running');

my @entries = (
	# 5 valid positions of 3 devices
	[ device_id => 'a', ts => '1000', lat => '1', lon => '1' ],
	[ device_id => 'a', ts => '2000', lat => '2', lon => '2' ],
	[ device_id => 'b', ts => '1000', lat => '3', lon => '3' ],
	[ device_id => 'c', ts => '1000', lat => '4', lon => '4' ],
	[ payload => '{"device_id":"c","ts":3000,"lat":5,"lon":5}' ],
	# 2 duplicates of rows above
	[ device_id => 'a', ts => '1000', lat => '9', lon => '9' ],
	[ device_id => 'b', ts => '1000', lat => '9', lon => '9' ],
	# 3 invalid entries
	[ device_id => 'd', ts => '1000', lat => '91', lon => '0' ],
	[ device_id => 'd', lat => '1', lon => '0' ],
	[ nothing => 'here' ]);
$redis->pipeline(map { [ 'XADD', 'telemetry:t', '*', @$_ ] } @entries);

ok(wait_for_rows($node, 'SELECT entries_read FROM processor.stats()', '10'),
	'10 entries read');
ok(poll_until(sub { pending_count($redis) == 0 }), 'all acknowledged');

is( $node->safe_psql(
		'postgres',
		'SELECT inserted, duplicates, dead_lettered FROM processor.stats()'),
	'5|2|3',
	'inserted 5, duplicates 2, dead_lettered 3');
is( $node->safe_psql(
		'postgres', q{
	SELECT s.inserted = (SELECT count(*) FROM public.positions),
	       s.dead_lettered = (SELECT count(*) FROM public.positions_dead_letter),
	       s.entries_read = s.inserted + s.duplicates + s.dead_lettered
	  FROM processor.stats() s}),
	't|t|t',
	'counters equal what the tables hold');
is( $node->safe_psql(
		'postgres', q{
	SELECT batches >= 1, last_batch_at IS NOT NULL, db_retries, claimed,
	       redis_connected, last_error IS NULL
	  FROM processor.stats()}),
	't|t|0|0|t|t',
	'batches and last_batch_at set; no retries, claims or errors');

# lag, pending and group_pending come from XINFO GROUPS, polled at most
# once a second.
ok( wait_for_rows(
		$node, 'SELECT lag, pending, group_pending FROM processor.stats()',
		'0|0|0'),
	'lag, pending and group_pending from Redis: all 0 once drained');
is($node->safe_psql('postgres', 'SELECT sum(positions_seen) FROM processor.devices()'),
	'7', 'positions_seen counts the 5 valid positions and the 2 duplicates');

# reset_stats()
my $before = $node->safe_psql('postgres', 'SELECT stats_reset FROM processor.stats()');
$node->safe_psql('postgres', 'SELECT processor.reset_stats()');
is( $node->safe_psql(
		'postgres', qq{
	SELECT entries_read, inserted, duplicates, dead_lettered, batches,
	       db_retries, redis_reconnects, claimed,
	       stats_reset > '$before', last_batch_at IS NOT NULL
	  FROM processor.stats()}),
	'0|0|0|0|0|0|0|0|t|t',
	'reset_stats zeroes the counters and moves stats_reset');
is( $node->safe_psql(
		'postgres', 'SELECT devices, evicted_total FROM processor.state_info()'),
	'3|0',
	'reset_stats keeps the devices');

# Counting resumes from zero.
$redis->xadd('telemetry:t', device_id => 'e', ts => '1000', lat => '1', lon => '1');
ok( wait_for_rows(
		$node, 'SELECT entries_read, inserted, batches FROM processor.stats()',
		'1|1|1'),
	'counting resumes after the reset');

$node->stop;
$redis->stop;
done_testing();
