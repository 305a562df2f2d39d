# 270_nine_invalid_kinds.pl: nine kinds of invalid entries in one batch
# are dead-lettered, each with its exact catalogue message, and the valid
# entry beside them is inserted (issue 4, test 1; SPEC §1, §4: invalid
# entries).
#
# The ten entries are published in ONE MULTI/EXEC while the worker is
# blocked in XREADGROUP with a COUNT (batch_size = 20) larger than their
# number, so that one read takes them all: the DEBUG1 line
# "batch read=10 inserted=1 duplicates=0 dead_lettered=9" proves it.
# Each expected message is first checked against processor.decode(), the
# worker's codec seen from SQL, so the test fails if either drifts from
# the catalogue.  Then: exactly nine dead letters, one per kind, with
# stream, stream_id, error and the entry's fields; the valid entry is in
# the target; nothing is pending; counters agree; the worker never
# restarted.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;

use RedisServer;
use ProcessorTest;

my $stream = 'telemetry:t';
my $ts = '2026-01-01T00:00:00Z';

# name, fields (as XADD field/value pairs), expected dead-letter error.
my @cases = (
	[ 'bad JSON',
		[ payload => '{not json}' ],
		'invalid JSON: Token "not" is invalid' ],
	[ 'missing key',
		[ payload => qq({"device_id":"k2","ts":"$ts","lat":1}) ],
		'missing key: lon' ],
	[ 'out-of-range lat',
		[ payload => qq({"device_id":"k3","ts":"$ts","lat":91.5,"lon":2}) ],
		'lat out of range: 91.5' ],
	[ '65-byte device_id',
		[ payload => '{"device_id":"' . ('x' x 65) . qq(","ts":"$ts","lat":1,"lon":2}) ],
		'device_id too long: 65 bytes (max 64)' ],
	[ 'unparsable ts',
		[ payload => '{"device_id":"k5","ts":"not-a-time","lat":1,"lon":2}' ],
		'invalid ts: "not-a-time"' ],
	[ 'flat without ts',
		[ device_id => 'k6', lat => '1', lon => '2' ],
		'missing key: ts' ],
	[ 'neither shape',
		[ foo => 'bar', lat => '1' ],
		'entry has neither a payload field nor a device_id field' ],
	[ 'JSON array payload',
		[ payload => qq([{"device_id":"k8","ts":"$ts","lat":1,"lon":2}]) ],
		'payload is not a JSON object' ],
	[ 'empty payload',
		[ payload => '' ],
		'invalid JSON: The input string ended unexpectedly' ],
);
my @valid = (device_id => 'ok-1', ts => '1767225600000', lat => '52.1',
	lon => '4.9', speed => '12.5');

my $redis = RedisServer->new;
my $node = new_node('nine', redis => $redis, 'processor.batch_size' => 20);

$node->safe_psql('postgres', 'CREATE EXTENSION processor');

# --- The catalogue, seen through processor.decode().

foreach my $c (@cases)
{
	my ($name, $fields, $expected) = @$c;
	my %h = @$fields;
	# Fields as a jsonb object: decode(jsonb) is the worker's codec on an
	# entry's field/value pairs.
	my $json = '{'
	  . join(',', map { '"' . $_ . '":' . json_string($h{$_}) } sort keys %h)
	  . '}';
	my ($ret, $stdout, $stderr) = $node->psql('postgres',
		"SELECT processor.decode(" . sql_literal($json) . "::jsonb)");
	$stderr =~ s/^.*?ERROR:\s+//s;
	$stderr =~ s/\s+$//;
	is($stderr, $expected, "decode(): $name -> $expected");
}
ok( worker_running($node),
	'worker running');
my $pid = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'processor'});
like($pid, qr/^\d+$/, "worker pid $pid");

# --- Ten entries in one MULTI/EXEC: one read takes them all.

my $offset = -s $node->logfile;
$redis->pipeline(['MULTI'],
	(map { [ 'XADD', $stream, '*', @{ $_->[1] } ] } @cases),
	[ 'XADD', $stream, '*', @valid ],
	['EXEC']);
my @ids = grep { /^\d+-\d+$/ } split /\n/,
  $redis->cli('XRANGE', $stream, '-', '+');
is(scalar(@ids), 10, 'ten entries published');

ok( wait_for_rows(
		$node,
		q{SELECT (SELECT count(*) FROM public.positions) || '/'
		      || (SELECT count(*) FROM public.positions_dead_letter)},
		'1/9'),
	'one row inserted, nine dead letters');
ok(poll_until(sub { pending_count($redis) == 0 }), 'nothing pending');
ok( $node->log_contains(
		qr/batch read=10 inserted=1 duplicates=0 dead_lettered=9/, $offset),
	'all ten came in one batch: read=10 inserted=1 dead_lettered=9');

# Each dead letter, by stream id, with its exact message.
my %by_id = map { split /\|/, $_, 2 } split /\n/,
  $node->safe_psql('postgres',
	q{SELECT stream_id, error FROM public.positions_dead_letter});
for my $i (0 .. $#cases)
{
	my ($name, undef, $expected) = @{ $cases[$i] };
	is($by_id{ $ids[$i] }, $expected, "dead letter ($name): $expected");
}
is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) FROM public.positions_dead_letter
		  WHERE stream = 'telemetry:t' AND fields IS NOT NULL
		    AND coalesce(deliveries, 1) = 1 AND failed_at IS NOT NULL}),
	'9',
	'every dead letter names the stream, keeps its fields, was delivered once');
is( $node->safe_psql(
		'postgres',
		sprintf(q{SELECT fields = '{"device_id":"k6","lat":"1","lon":"2"}'::jsonb
		  FROM public.positions_dead_letter WHERE stream_id = '%s'}, $ids[5])),
	't',
	'the flat entry\'s fields are kept as field/value pairs');
is( $node->safe_psql(
		'postgres',
		sprintf(q{SELECT fields->>'payload' FROM public.positions_dead_letter
		  WHERE stream_id = '%s'}, $ids[0])),
	'{not json}',
	'the bad JSON is kept as it was sent');
is( $node->safe_psql(
		'postgres',
		q{SELECT device_id, ts = '2026-01-01 00:00:00+00', lat, lon, speed, stream_id
		  FROM public.positions}),
	"ok-1|t|52.1|4.9|12.5|$ids[9]",
	'the valid entry is inserted intact, with its stream id');
is($node->safe_psql('postgres', q{SELECT count(*) FROM processor.device_state}),
	'1', 'device state holds only the valid entry\'s device');
is( $node->safe_psql(
		'postgres',
		'SELECT entries_read, inserted, duplicates, dead_lettered FROM processor.stats()'),
	'10|1|0|9',
	'processor.stats() counts the same');
is( $node->safe_psql(
		'postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'processor'}),
	$pid, 'same worker pid throughout');

$node->stop;
$redis->stop;

done_testing();

# A JSON string literal for $s (ASCII input here).
sub json_string
{
	my ($s) = @_;
	$s =~ s/(["\\])/\\$1/g;
	return qq("$s");
}

# An SQL string literal.
sub sql_literal
{
	my ($s) = @_;
	$s =~ s/'/''/g;
	return "'$s'";
}
