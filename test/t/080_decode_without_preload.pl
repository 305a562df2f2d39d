# 080_decode_without_preload.pl: processor.decode works whether or not the
# library is preloaded (SPEC §6).  On a server without processor in
# shared_preload_libraries, CREATE EXTENSION works, both forms of
# processor.decode return the row the worker would insert, and an invalid
# entry gives the catalogue message (SQLSTATE 22023) without harming the
# session or the server.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;

use ProcessorTest;

my $node = new_node('nopreload', shared_preload_libraries => '');

is($node->safe_psql('postgres', 'SHOW shared_preload_libraries'),
	'', 'processor is not preloaded');
is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'processor'}),
	'0',
	'no worker');

$node->safe_psql('postgres', 'CREATE EXTENSION processor');

my $columns = q{device_id,
	to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
	lat, lon, altitude, speed, heading, satellites, priority,
	attributes::text};

is( $node->safe_psql(
		'postgres',
		"SELECT $columns FROM processor.decode("
		  . q{'{"device_id":"a","ts":"2026-01-01T00:00:00Z","lat":1,"lon":2}')}),
	'a|2026-01-01T00:00:00.000Z|1|2||||||{}',
	'decode(text): a JSON payload');

my $flat = '{"device_id":"b","ts":"1767225600123","lat":"52.5",'
  . '"lon":"-4.25","satellites":"11","attributes":'
  . '"{\\"n\\":123456789012345678901,'
  . '\\"x\\":{\\"type\\":\\"Buffer\\",\\"data\\":[1,2,3,4]}}"}';
is( $node->safe_psql(
		'postgres', "SELECT $columns FROM processor.decode('$flat'::jsonb)"),
	'b|2026-01-01T00:00:00.123Z|52.5|-4.25||||11||'
	  . '{"n": 123456789012345678901, "x": "AQIDBA=="}',
	'decode(jsonb): flat fields, epoch ms, attributes text with a Buffer');

# An invalid entry: the catalogue message, SQLSTATE 22023.
my ($ret, $stdout, $stderr) = $node->psql('postgres',
	"\\set VERBOSITY verbose\n"
	  . q{SELECT * FROM processor.decode('{"device_id":"a","lat":1,"lon":2}')});
isnt($ret, 0, 'decode of an entry without ts fails');
like($stderr, qr/ERROR:  22023: missing key: ts$/m,
	'the catalogue message "missing key: ts", SQLSTATE 22023');

($ret, $stdout, $stderr) = $node->psql('postgres',
	q{SELECT * FROM processor.decode('{"device_id":"a","ts":"2026-01-01T00:00:00Z","lat":91.5,"lon":2}')});
like($stderr, qr/ERROR:  lat out of range: 91\.5$/m,
	'lat out of range: the catalogue message');

($ret, $stdout, $stderr) = $node->psql('postgres',
	q{SELECT * FROM processor.decode('{"lat":1,"lon":2,"ts":"2026-01-01T00:00:00Z"}'::jsonb)});
like(
	$stderr,
	qr/ERROR:  entry has neither a payload field nor a device_id field$/m,
	'decode(jsonb) of fields without payload or device_id: the catalogue message');

# The error is an ordinary ERROR: the session goes on.
is( $node->safe_psql(
		'postgres', q{
		DO $$
		BEGIN
			PERFORM processor.decode('{"device_id":"a","lat":1,"lon":2}');
		EXCEPTION WHEN invalid_parameter_value THEN
			RAISE NOTICE 'caught: %', SQLERRM;
		END $$;
		SELECT 'still here'}),
	'still here',
	'the error can be caught, the session goes on');

unlike(
	slurp_file($node->logfile),
	qr/terminated by signal|server process .* was terminated/,
	'no backend crashed');

$node->stop;

done_testing();
