
# 091_device_state_latest_position.pl: the device state in shared memory
# (SPEC §5) keeps the position with the greatest ts.  Out-of-order and
# replayed positions never move the latest position or last_seen back, but
# every valid position counts in positions_seen and sets updated_at;
# optional fields absent from the newest position read as NULL; invalid
# entries leave the state alone.  processor.device(text) and
# processor.devices() agree, and the state updates before the insert.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;

use RedisServer;
use ProcessorTest;

my $redis = RedisServer->new;
my $node = new_node('latest', redis => $redis);
$node->safe_psql('postgres', 'CREATE EXTENSION processor');

# Flat entries: ts in epoch milliseconds.
sub send_position
{
	my (%fields) = @_;
	return $redis->xadd('telemetry:t', map { $_ => $fields{$_} } sort keys %fields);
}

# One device row as "ts_ms|lat|lon|altitude|speed|heading|satellites|
# last_seen_ms|positions_seen" (NULL as empty).
my $row_sql = q{
	SELECT (extract(epoch FROM ts) * 1000)::bigint, lat, lon, altitude,
	       speed, heading, satellites,
	       (extract(epoch FROM last_seen) * 1000)::bigint, positions_seen
	  FROM processor.device('d1')};

send_position(device_id => 'd1', ts => '3000', lat => '3', lon => '30',
	altitude => '300', speed => '33', heading => '90', satellites => '7');
ok(wait_for_rows($node, 'SELECT positions_seen FROM processor.device(\'d1\')', '1'),
	'first position applied');
is($node->safe_psql('postgres', $row_sql),
	'3000|3|30|300|33|90|7|3000|1', 'first position is the latest');

my $updated_1 = $node->safe_psql('postgres',
	q{SELECT updated_at FROM processor.device('d1')});

# Older, then the same ts again with other values (a replay): neither
# replaces the latest position; both count.
send_position(device_id => 'd1', ts => '1000', lat => '1', lon => '10');
send_position(device_id => 'd1', ts => '3000', lat => '9', lon => '90');
ok(wait_for_rows($node, 'SELECT positions_seen FROM processor.device(\'d1\')', '3'),
	'older and replayed positions counted');
is($node->safe_psql('postgres', $row_sql),
	'3000|3|30|300|33|90|7|3000|3',
	'out-of-order and replayed positions move nothing back');
is( $node->safe_psql(
		'postgres',
		qq{SELECT updated_at > '$updated_1' FROM processor.device('d1')}),
	't',
	'updated_at moves with every position');

# Invalid entries (dead-lettered) do not touch the state.
send_position(device_id => 'd1', ts => '9000', lat => '91', lon => '0');
ok(wait_for_rows($node, 'SELECT count(*) FROM public.positions_dead_letter', '1'),
	'invalid entry dead-lettered');
is($node->safe_psql('postgres', $row_sql),
	'3000|3|30|300|33|90|7|3000|3', 'an invalid entry changes nothing');

# A newer position replaces every field, absent optional ones included.
send_position(device_id => 'd1', ts => '5000', lat => '5', lon => '50');
ok(wait_for_rows($node, 'SELECT positions_seen FROM processor.device(\'d1\')', '4'),
	'newer position applied');
is($node->safe_psql('postgres', $row_sql),
	'5000|5|50|||||5000|4', 'newer position replaces the latest, NULLs included');

# devices() and the view show the same row as device(text).
is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM processor.device_state d
	  JOIN processor.device('d1') x USING (device_id)
	 WHERE d IS NOT DISTINCT FROM x}),
	'1',
	'device_state and device(text) agree');

# Rows that reached the table: 3000 (first), 1000; the replay of 3000 is a
# duplicate; 5000.
ok(wait_for_rows($node, 'SELECT count(*) FROM public.positions', '3'),
	'table has the three distinct positions');
is($node->safe_psql('postgres', 'SELECT devices FROM processor.state_info()'),
	'1', 'one device in shared memory');
is($node->safe_psql('postgres', q{SELECT count(*) FROM processor.device('d2')}),
	'0', 'an unknown device has no row');

# The state moves even when the insert cannot: with the target table
# locked out, a newer position still reaches shared memory.
my $bg = $node->background_psql('postgres');
$bg->query_safe('BEGIN');
$bg->query_safe('LOCK TABLE public.positions IN ACCESS EXCLUSIVE MODE');
send_position(device_id => 'd1', ts => '7000', lat => '7', lon => '70');
ok(wait_for_rows($node, 'SELECT positions_seen FROM processor.device(\'d1\')', '5'),
	'state updated before the insert, while the table is locked');
$bg->query_safe('COMMIT');
$bg->quit;
ok(wait_for_rows($node, 'SELECT count(*) FROM public.positions', '4'),
	'the row follows once the lock is gone');

$node->stop;
$redis->stop;
done_testing();
