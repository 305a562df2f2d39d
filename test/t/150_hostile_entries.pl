
# 150_hostile_entries.pl: nothing a producer writes can break the batch it
# arrives in (SPEC §1, §2, §4; issue 6).  Every hostile entry below is
# published next to a valid one, all of them in ONE batch (published before
# CREATE EXTENSION, read with a batch_size larger than their number; the
# DEBUG1 "batch read=N" line proves it), and each one either
#   - is dead-lettered with its exact catalogue message, in a dead-letter
#     row that always inserts: fields escaped (\xNN for NUL and invalid
#     UTF-8), each value cut to 8 kB, the whole object capped at 64 kB; or
#   - is valid and lands intact (10 000 attribute keys; 100 000 fields of
#     which only four are known; NUL bytes in an unknown field).
# All valid companions land, nothing is pending, the worker never restarts
# and the server never crashes.
#
# The hostile inputs: nesting depth 100 000 (in attributes, JSON and flat,
# and elsewhere in a payload); a 1 MB device_id (JSON and flat) within a
# raised processor.max_entry_bytes, and an entry over it; invalid UTF-8 in
# a device_id, a payload, a number and a flat attributes text; NUL bytes in
# values and field names, and \u0000 in JSON; NaN, Infinity, -Infinity and
# 1e999 as lat (flat, JSON bare, JSON string); a number numeric cannot hold
# in attributes; duplicate top-level keys (JSON, flat, two payload fields);
# 10 000 attribute keys; 100 000 fields in one entry (valid, and with a
# duplicate at the very end); 64 kB of control characters in values (each
# one six bytes, \u0001, in the jsonb's text).

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;

use RedisServer;
use ProcessorTest;

my $stream = 'telemetry:t';
my $max_entry_bytes = 2 * 1024 * 1024;
my $dl_slack = 1024;    # JSON punctuation around the 64 kB of the object

my $ts = '2026-01-01T00:00:00Z';
# The start of a valid payload for device $d; the caller closes it.
sub json_head
{
	my ($d) = @_;
	return qq({"device_id":"$d","ts":"$ts","lat":1,"lon":2);
}
# A valid flat entry for device $d.
sub flat
{
	my ($d, @more) = @_;
	return (device_id => $d, ts => $ts, lat => '1', lon => '2', @more);
}

my $deep = 100_000;
my $mb = 1024 * 1024;

my @many_fields = map { (sprintf('f%06d', $_) => 'v') } 1 .. 99_996;
my $attrs_10k = '{' . join(',', map { sprintf('"k%05d":%d', $_, $_) } 0 .. 9_999) . '}';

# name, fields, expected error (undef: valid, must land).
my @cases = (
	[ 'JSON attributes nested 100 000 deep',
		[ payload => json_head('h1') . ',"attributes":' . ('{"a":' x $deep) . '1'
			  . ('}' x $deep) . '}' ],
		'attributes nested too deeply (max 64)' ],
	[ 'flat attributes nested 100 000 deep',
		[ flat('h2', attributes => '{"a":' . ('[' x $deep) . (']' x $deep) . '}') ],
		'attributes nested too deeply (max 64)' ],
	[ 'JSON payload nested 100 000 deep outside attributes',
		[ payload => json_head('h3') . ',"x":' . ('[' x $deep) . (']' x $deep) . '}' ],
		'payload nested too deeply (max 256)' ],
	[ 'flat 1 MB device_id',
		[ flat('d' x $mb) ],
		"device_id too long: $mb bytes (max 64)" ],
	[ 'JSON 1 MB device_id',
		[ payload => json_head('d' x $mb) . '}' ],
		"device_id too long: $mb bytes (max 64)" ],
	[ 'entry over processor.max_entry_bytes',
		[ flat('h6', blob => 'x' x (3 * $mb)) ],
		'entry too large: BYTES bytes (max ' . $max_entry_bytes . ')' ],
	[ 'invalid UTF-8 in a flat device_id',
		[ flat("dev\xff\xfe") ],
		'device_id is not valid UTF-8' ],
	[ 'invalid UTF-8 in a JSON payload',
		[ payload => json_head("h8\xc3(") . '}' ],
		'payload is not valid UTF-8' ],
	[ 'invalid UTF-8 in a flat lat',
		[ device_id => 'h9', ts => $ts, lat => "\xff1", lon => '2' ],
		'lat is not a number: \xff1' ],
	[ 'invalid UTF-8 in flat attributes',
		[ flat('h10', attributes => "{\"a\":\"\xe2\x82\"}") ],
		'attributes is not valid UTF-8' ],
	[ 'NUL byte in a device_id',
		[ flat("dev\0ice") ],
		'device_id contains a control character' ],
	[ 'NUL byte in a flat lat',
		[ device_id => 'h12', ts => $ts, lat => "1\0", lon => '2' ],
		'lat is not a number: 1\x00' ],
	[ 'NUL byte in field names, no real device_id',
		[ "device_id\0" => 'h13', ts => $ts, "lat\0" => '1', lon => '2' ],
		'entry has neither a payload field nor a device_id field' ],
	[ 'NUL bytes in an unknown field name and value (valid)',
		[ flat('h14', "x\0y" => "v\0w") ],
		undef ],
	[ 'JSON \u0000 in device_id',
		[ payload => json_head('h\u0000') . '}' ],
		'invalid JSON: \u0000 cannot be converted to text' ],
	[ 'flat lat NaN',
		[ device_id => 'h16', ts => $ts, lat => 'NaN', lon => '2' ],
		'lat is not a number: NaN' ],
	[ 'flat lat Infinity',
		[ device_id => 'h17', ts => $ts, lat => 'Infinity', lon => '2' ],
		'lat is not a number: Infinity' ],
	[ 'flat lat -Infinity',
		[ device_id => 'h18', ts => $ts, lat => '-Infinity', lon => '2' ],
		'lat is not a number: -Infinity' ],
	[ 'flat lat 1e999',
		[ device_id => 'h19', ts => $ts, lat => '1e999', lon => '2' ],
		'lat out of range: 1e999' ],
	[ 'JSON lat NaN',
		[ payload => qq({"device_id":"h20","ts":"$ts","lat":NaN,"lon":2}) ],
		'invalid JSON: Token "NaN" is invalid' ],
	[ 'JSON lat Infinity',
		[ payload => qq({"device_id":"h21","ts":"$ts","lat":Infinity,"lon":2}) ],
		'invalid JSON: Token "Infinity" is invalid' ],
	[ 'JSON lat 1e999',
		[ payload => qq({"device_id":"h22","ts":"$ts","lat":1e999,"lon":2}) ],
		'lat out of range: 1e999' ],
	[ 'JSON lat "NaN" (a string)',
		[ payload => qq({"device_id":"h23","ts":"$ts","lat":"NaN","lon":2}) ],
		'lat is not a number: "NaN"' ],
	[ 'JSON attribute number numeric cannot hold',
		[ payload => json_head('h24') . ',"attributes":{"n":1e999999}}' ],
		'attributes number out of range: 1e999999' ],
	[ 'JSON attributes with 10 000 keys (valid)',
		[ payload => json_head('h25') . qq(,"attributes":$attrs_10k}) ],
		undef ],
	[ 'JSON duplicate top-level key',
		[ payload => json_head('h26') . ',"device_id":"h26b"}' ],
		'duplicate key: device_id' ],
	[ 'flat duplicate field',
		[ flat('h27', lat => '3') ],
		'duplicate key: lat' ],
	[ 'two payload fields',
		[ payload => json_head('h28') . '}', payload => json_head('h28') . '}' ],
		'duplicate key: payload' ],
	[ '100 000 fields (valid: unknown ones ignored)',
		[ flat('h29', @many_fields) ],
		undef ],
	[ '100 000 fields, the last a duplicate',
		[ flat('h30', @many_fields[ 0 .. $#many_fields - 2 ], lat => '3') ],
		'duplicate key: lat' ],
	[ 'control characters filling 64 kB of values',
		[ flat("h31\x01", map { ("c$_" => "\x01" x 8000) } 1 .. 8) ],
		'device_id contains a control character' ],
);

# Entry size as the codec counts it: the sum of field and value lengths.
foreach my $case (@cases)
{
	next unless defined $case->[2] && $case->[2] =~ /BYTES/;
	my $size = 0;
	$size += length($_) foreach @{ $case->[1] };
	$case->[2] =~ s/BYTES/$size/;
}

my $redis = RedisServer->new;
my $node = new_node(
	'hostile',
	redis => $redis,
	'processor.batch_size' => 1000,
	'processor.max_entry_bytes' => '2MB');

# Publish everything before CREATE EXTENSION: the worker waits for it, then
# creates the group at 0 and reads all of it with one XREADGROUP.
my (@commands, %case_of_id, @valid_ids);
my $n = 0;
foreach my $case (@cases)
{
	$n++;
	my $id = "1000-$n";
	$case_of_id{$id} = $case;
	push @commands, [ 'XADD', $stream, $id, @{ $case->[1] } ];
	push @valid_ids, $id unless defined $case->[2];
	$n++;
	$id = "1000-$n";
	push @commands,
	  [ 'XADD', $stream, $id,
		device_id => "ok-$n", ts => 1767225600000 + $n, lat => '1', lon => '2' ];
	push @valid_ids, $id;
}
is($redis->pipeline(@commands), scalar(@commands), 'all entries published');
my $nentries = scalar(@commands);
my $ndead = grep { defined $_->[2] } @cases;
my $nvalid = $nentries - $ndead;

my $pid;
ok( poll_until(
		sub {
			$pid = $node->safe_psql('postgres',
				q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'processor'});
			return $pid =~ /^\d+$/;
		}),
	'worker running');
$node->safe_psql('postgres', 'CREATE EXTENSION processor');

ok( wait_for_rows(
		$node, q{
	SELECT (SELECT count(*) FROM public.positions) || '/' ||
	       (SELECT count(*) FROM public.positions_dead_letter)},
		"$nvalid/$ndead"),
	"$nvalid valid entries landed, $ndead dead-lettered");
ok(poll_until(sub { pending_count($redis) == 0 }), 'nothing pending');
ok($node->log_contains(qr/batch read=$nentries inserted=$nvalid duplicates=0 dead_lettered=$ndead/),
	"all $nentries entries were one batch");

# --- Each case's outcome.

my %dead = map { my @f = split /\|/, $_, 2; ($f[0] => $f[1]) } split /\n/,
  $node->safe_psql('postgres',
	q{SELECT stream_id, error FROM public.positions_dead_letter});
foreach my $id (sort { (split /-/, $a)[1] <=> (split /-/, $b)[1] } keys %case_of_id)
{
	my ($name, undef, $expected) = @{ $case_of_id{$id} };
	if (defined $expected)
	{
		is($dead{$id}, $expected, "$name: dead-lettered, \"$expected\"");
	}
	else
	{
		ok(!exists $dead{$id}, "$name: not dead-lettered");
	}
}
is( $node->safe_psql(
		'postgres',
		'SELECT string_agg(stream_id, \',\' ORDER BY split_part(stream_id, \'-\', 2)::int) FROM public.positions'),
	join(',', @valid_ids),
	'every valid entry, hostile or companion, is a row');

# --- The dead-letter rows themselves.

is( $node->safe_psql(
		'postgres', qq{
	SELECT count(*) FROM public.positions_dead_letter
	 WHERE fields IS NULL OR stream <> '$stream'}),
	'0', 'every dead letter keeps its fields and stream');
my $oversized = $node->safe_psql(
	'postgres', qq{
	SELECT string_agg(stream_id || ': ' || octet_length(fields::text), ', ')
	  FROM public.positions_dead_letter
	 WHERE octet_length(fields::text) > 65536 + $dl_slack});
is($oversized, '', 'every dead letter\'s fields are at most 64 kB as text');
is( $node->safe_psql(
		'postgres', q{
	SELECT max(octet_length(f.value))
	  FROM public.positions_dead_letter d, jsonb_each_text(d.fields) f}),
	'8192', 'values are cut to 8 kB (the 1 MB device_ids)');

# Escapes: \xNN for NUL bytes and invalid UTF-8, in names and values.
sub dl_id_of
{
	my ($name) = @_;
	my ($id) = grep { $case_of_id{$_}[0] eq $name } keys %case_of_id;
	return $id;
}
is( $node->safe_psql(
		'postgres', sprintf(q{
	SELECT fields->>'device_id' FROM public.positions_dead_letter
	 WHERE stream_id = '%s'}, dl_id_of('invalid UTF-8 in a flat device_id'))),
	'dev\xff\xfe', 'invalid UTF-8 escaped in the dead letter');
is( $node->safe_psql(
		'postgres', sprintf(q{
	SELECT fields->>'device_id' FROM public.positions_dead_letter
	 WHERE stream_id = '%s'}, dl_id_of('NUL byte in a device_id'))),
	'dev\x00ice', 'NUL byte in a value escaped in the dead letter');
is( $node->safe_psql(
		'postgres', sprintf(q{
	SELECT (fields->>'device_id\x00') || (fields->>'lat\x00')
	  FROM public.positions_dead_letter WHERE stream_id = '%s'},
		dl_id_of('NUL byte in field names, no real device_id'))),
	'h131', 'NUL bytes in field names escaped in the dead letter');

# --- The valid hostile ones landed intact.

is( $node->safe_psql(
		'postgres', q{
	SELECT (SELECT count(*) FROM jsonb_object_keys(attributes)),
	       attributes->>'k00000', attributes->>'k09999'
	  FROM public.positions WHERE device_id = 'h25'}),
	'10000|0|9999', '10 000 attribute keys land intact');
is( $node->safe_psql(
		'postgres', q{
	SELECT lat, lon, attributes FROM public.positions
	 WHERE device_id IN ('h14', 'h29')}),
	"1|2|{}\n1|2|{}", 'unknown fields (NUL bytes, 99 996 of them) are ignored');

# --- Nothing broke.

is( $node->safe_psql(
		'postgres', 'SELECT inserted, dead_lettered FROM processor.stats()'),
	"$nvalid|$ndead", 'processor.stats() counts the same');
is( $node->safe_psql(
		'postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'processor'}),
	$pid, 'same worker pid throughout');
my $log = slurp_file($node->logfile);
unlike($log, qr/terminated by signal/, 'the server never crashed');
unlike($log, qr/background worker "processor" \(PID \d+\) exited/,
	'the worker never exited');

$node->stop;
$redis->stop;

done_testing();
