# 010_delivery.pl: the delivery rules of SPEC §4 on a real stream.
#
# - Entries published BEFORE CREATE EXTENSION are consumed (the group is
#   created at processor.group_start_id = 0, not at "$").
# - A duplicate (device_id, ts) inside one batch, written once as epoch
#   milliseconds and once as ISO-8601, and the same row again in a later
#   batch, are stored once (the first delivery wins: its stream_id) and
#   ACKed: the pending list ends empty, and the per-batch DEBUG1 line counts
#   them as duplicates.
# - A 21-digit integer attribute and Buffer attributes nested in arrays and
#   objects round-trip exactly (jsonb text), in both encodings.
# - An invalid entry becomes one dead letter with the stream, the id, the
#   entry's fields and the catalogue message; delivered a second time (the
#   group rewound with XGROUP SETID), it still gives ONE dead letter, and the
#   positions do not change.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;

use RedisServer;
use ProcessorTest;

my $stream = 'telemetry:t';

# True once group "processor" has delivered everything up to $id and has
# nothing pending.
sub caught_up
{
	my ($redis, $id) = @_;
	my $g = stream_groups($redis, $stream)->{processor};
	return
		 defined $g
	  && $g->{'last-delivered-id'} eq $id
	  && $g->{pending} eq '0';
}

my $redis = RedisServer->new;
my $node = new_node('delivery', redis => $redis);

# --- Published before CREATE EXTENSION, all in the worker's first batch.

my $json_attrs =
	'{"big":123456789012345678901,"neg":-123456789012345678901,'
  . '"str":"123456789012345678901",'
  . '"arr":[1,{"type":"Buffer","data":[255,0,1]}],'
  . '"obj":{"inner":{"type":"Buffer","data":[104,105]}},'
  . '"deep":[{"x":[{"type":"Buffer","data":[0]}]}]}';
my $id_json = $redis->xadd($stream,
	payload => '{"device_id":"attr-json","ts":"2026-01-01T00:00:00Z",'
	  . qq{"lat":1,"lon":2,"attributes":$json_attrs\}});

my $id_flat = $redis->xadd(
	$stream,
	device_id => 'attr-flat',
	ts => '1767225600000',
	lat => '1',
	lon => '2',
	attributes =>
	  '{"n":987654321098765432109,"b":[{"type":"Buffer","data":[1,2,3]}]}');

# The same (device_id, ts) twice in one batch: epoch ms, then ISO-8601.
my $id_dup1 = $redis->xadd(
	$stream,
	device_id => 'dup',
	ts => '1767225600000',
	lat => '10',
	lon => '20');
my $id_dup2 = $redis->xadd($stream,
	payload =>
	  '{"device_id":"dup","ts":"2026-01-01T00:00:00Z","lat":30,"lon":40}');

# Invalid: no ts.
my $id_bad = $redis->xadd(
	$stream,
	device_id => 'bad',
	lat => '1',
	lon => '2');

$node->safe_psql('postgres', 'CREATE EXTENSION processor');

ok(wait_for_rows($node, 'SELECT count(*) FROM public.positions', '3'),
	'entries published before CREATE EXTENSION were consumed');
ok(poll_until(sub { caught_up($redis, $id_bad) }),
	'first batch acknowledged: nothing pending');
ok( $node->log_contains(
		qr/batch read=5 inserted=3 duplicates=1 dead_lettered=1\b/),
	'first batch: one duplicate inside the batch counted, one dead letter');

is( $node->safe_psql(
		'postgres',
		q{SELECT count(*), string_agg(stream_id || ' ' || lat || ' ' || lon, ',')
		  FROM public.positions WHERE device_id = 'dup'}),
	"1|$id_dup1 10 20",
	'duplicate inside a batch stored once: the first delivery wins');

# --- Round trip of big integers and Buffers, exactly (jsonb text).

is( $node->safe_psql(
		'postgres',
		q{SELECT attributes::text FROM public.positions
		  WHERE device_id = 'attr-json'}),
	'{"arr": [1, "/wAB"], "big": 123456789012345678901, '
	  . '"neg": -123456789012345678901, "obj": {"inner": "aGk="}, '
	  . '"str": "123456789012345678901", "deep": [{"x": ["AA=="]}]}',
	'JSON entry: 21-digit integers exact, Buffers in an array and an object as base64'
);
is( $node->safe_psql(
		'postgres',
		q{SELECT attributes::text FROM public.positions
		  WHERE device_id = 'attr-flat'}),
	'{"b": ["AQID"], "n": 987654321098765432109}',
	'flat entry: 21-digit integer exact, Buffer in an array as base64');
is( $node->safe_psql(
		'postgres',
		q{SELECT (attributes->'big')::numeric = 123456789012345678901
		  FROM public.positions WHERE device_id = 'attr-json'}),
	't',
	'the big integer is a jsonb number with every digit');

# --- The dead letter.

is( $node->safe_psql(
		'postgres',
		q{SELECT stream, stream_id, fields::text, error, failed_at IS NOT NULL
		  FROM public.positions_dead_letter}),
	join('|',
		$stream, $id_bad, '{"lat": "1", "lon": "2", "device_id": "bad"}',
		'missing key: ts', 't'),
	'dead letter: stream, id, the entry fields as jsonb, the catalogue message'
);

# --- The same row again, in a later batch.

my $id_dup3 = $redis->xadd(
	$stream,
	device_id => 'dup',
	ts => '2026-01-01T01:00:00+01:00',
	lat => '50',
	lon => '60');
ok(poll_until(sub { caught_up($redis, $id_dup3) }),
	'the repeated row was delivered and acknowledged');
ok( $node->log_contains(
		qr/batch read=1 inserted=0 duplicates=1 dead_lettered=0\b/),
	'later batch: the repeated row counted as a duplicate');
is( $node->safe_psql(
		'postgres',
		q{SELECT count(*), string_agg(stream_id || ' ' || lat || ' ' || lon, ',')
		  FROM public.positions WHERE device_id = 'dup'}),
	"1|$id_dup1 10 20",
	'the row repeated in a later batch is still stored once, unchanged');

# --- Deliver everything again: the invalid entry gives one dead letter.

my $before = $node->safe_psql('postgres',
	q{SELECT string_agg(device_id || ' ' || stream_id || ' ' || attributes::text,
		',' ORDER BY device_id) FROM public.positions});

is($redis->cli('XGROUP', 'SETID', $stream, 'processor', '0'),
	'OK', 'group rewound to 0: every entry is delivered again');
ok(poll_until(sub { caught_up($redis, $id_dup3) }),
	'redelivered entries processed: last-delivered-id back at the end, nothing pending'
);

is($node->safe_psql('postgres', 'SELECT count(*) FROM public.positions_dead_letter'),
	'1', 'the invalid entry delivered twice gives ONE dead letter');
is( $node->safe_psql(
		'postgres',
		q{SELECT string_agg(device_id || ' ' || stream_id || ' ' || attributes::text,
			',' ORDER BY device_id) FROM public.positions}),
	$before,
	'positions unchanged by the redelivery');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.positions'),
	'3', 'still three rows');

$node->stop;
$redis->stop;

done_testing();
