
# 001_smoke.pl: one JSON entry and one flat entry (the examples of SPEC §1)
# published to Redis become two rows of public.positions with exactly the
# values the producer sent, and the consumer group has nothing pending.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;

use RedisServer;
use ProcessorTest;

my $redis = RedisServer->new;
my $node = new_node('smoke', redis => $redis);

$node->safe_psql('postgres', 'CREATE EXTENSION processor');

my $json =
    '{"device_id":"356307042441013","ts":"2026-11-26T10:00:00.123Z",'
  . '"lat":52.37012,"lon":4.89045,"altitude":12.5,"speed":43.2,'
  . '"heading":271,"satellites":11,"priority":0,'
  . '"attributes":{"239":1,"16":"123456789012345678901",'
  . '"78":{"type":"Buffer","data":[1,2,3,4]}}}';
my $json_id = $redis->xadd('telemetry:t', payload => $json);

my $flat_id = $redis->xadd(
	'telemetry:t',
	device_id => '356307042441013',
	ts => '1764151200123',
	lat => '52.37012',
	lon => '4.89045',
	speed => '43.2');

ok( wait_for_rows($node, 'SELECT count(*) FROM public.positions', '2'),
	'both entries stored as rows');

ok(poll_until(sub { pending_count($redis) == 0 }),
	'both entries acknowledged: nothing pending in group "processor"');

is( $node->safe_psql(
		'postgres', 'SELECT count(*) FROM public.positions_dead_letter'),
	'0',
	'no dead letters');

# psql -At output: columns separated by "|", NULL as the empty string.
# Timestamps are compared in UTC; floats print in shortest exact form.
my $columns = q{
	device_id,
	to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
	lat, lon, altitude, speed, heading, satellites, priority,
	attributes::text, stream_id, received_at IS NOT NULL
};

is( $node->safe_psql(
		'postgres', "SELECT $columns FROM public.positions
		WHERE ts = '2026-11-26T10:00:00.123Z'"),
	join('|',
		'356307042441013', '2026-11-26T10:00:00.123Z',
		'52.37012', '4.89045', '12.5', '43.2', '271', '11', '0',
		'{"16": "123456789012345678901", "78": "AQIDBA==", "239": 1}',
		$json_id, 't'),
	'JSON entry: every column as sent, Buffer attribute as base64');

is( $node->safe_psql(
		'postgres', "SELECT $columns FROM public.positions
		WHERE ts = '2025-11-26T10:00:00.123Z'"),
	join('|',
		'356307042441013', '2025-11-26T10:00:00.123Z',
		'52.37012', '4.89045', '', '43.2', '', '', '',
		'{}', $flat_id, 't'),
	'flat entry: epoch milliseconds, absent keys NULL, attributes {}');

done_testing();
