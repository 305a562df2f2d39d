# 210_max_deliveries.pl: an entry delivered more than
# processor.max_deliveries times is dead-lettered without another attempt;
# its batch-mates are not (SPEC §4, poison by crash; issue 4, test 7).
#
# A vanished consumer "ghost" holds three valid entries; the delivery count
# of the middle one is raised with XCLAIM ... RETRYCOUNT 20 JUSTID.  When
# the worker claims them (claim_min_idle = 1s), XAUTOCLAIM raises every
# count by one: the middle entry is at 21 > 10 and becomes a dead letter
# "delivered 21 times (max 10)" with deliveries = 21 and its fields, and is
# NOT inserted (although it is valid: no insert was attempted); its
# neighbours (count 2) land.
#
# Then processor.max_deliveries = 3 (reload): an entry raised to RETRYCOUNT
# 3 is claimed at 4 > 3 and dead-lettered "delivered 4 times (max 3)";
# one raised to 2 is claimed at 3 = max and lands (the limit is "more
# than").  Nothing stays pending.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;

use RedisServer;
use ProcessorTest;

my $stream = 'telemetry:t';

# Publish the entries (field lists) and have ghost read them, atomically,
# so that a running worker cannot read them first.  Returns their ids.
sub publish_to_ghost
{
	my ($redis, @entries) = @_;
	my $last = ($redis->cli('XINFO', 'STREAM', $stream) =~ /^last-generated-id\n(\S+)$/m)[0];
	my @cmds = (['MULTI']);
	push @cmds, [ 'XADD', $stream, '*', @$_ ] foreach @entries;
	push @cmds,
	  [ 'XREADGROUP', 'GROUP', 'processor', 'ghost', 'COUNT', '100',
		'STREAMS', $stream, '>' ];
	push @cmds, ['EXEC'];
	$redis->pipeline(@cmds);
	my @ids = grep { /^\d+-\d+$/ } split /\n/,
	  $redis->cli('XRANGE', $stream, "($last", '+');
	die "expected " . scalar(@entries) . " ids, got @ids" unless @ids == @entries;
	return @ids;
}

sub flat
{
	my ($device, $ts) = @_;
	return [ device_id => $device, ts => $ts, lat => '52.1', lon => '4.9' ];
}

my $redis = RedisServer->new;
my $node = new_node(
	'maxdel',
	redis => $redis,
	'processor.claim_min_idle' => '1s',
	'processor.claim_interval' => '1s');

# --- Default max_deliveries (10).

is($redis->cli('XGROUP', 'CREATE', $stream, 'processor', '0', 'MKSTREAM'),
	'OK', 'group created beforehand');
my ($v1, $poison, $v2) = publish_to_ghost(
	$redis,
	flat('v1', '1767225600001'),
	flat('poison', '1767225600002'),
	flat('v2', '1767225600003'));
is( $redis->cli(
		'XCLAIM', $stream, 'processor', 'ghost', '0', $poison,
		'RETRYCOUNT', '20', 'JUSTID'),
	$poison,
	'delivery count of the middle entry raised to 20');
my $p = pending_entries($redis, $stream);
is(join(',', map { "$p->{$_}{consumer}:$p->{$_}{count}" } $v1, $poison, $v2),
	'ghost:1,ghost:20,ghost:1', 'all three pending on ghost: counts 1, 20, 1');

$node->safe_psql('postgres', 'CREATE EXTENSION processor');

ok( wait_for_rows(
		$node, 'SELECT count(*) FROM public.positions_dead_letter', '1'),
	'one dead letter');
ok(wait_for_rows($node, 'SELECT count(*) FROM public.positions', '2'),
	'the two neighbours landed');
ok(poll_until(sub { pending_count($redis) == 0 }), 'nothing pending');

is( $node->safe_psql(
		'postgres',
		q{SELECT stream, stream_id, error, deliveries, fields->>'device_id'
		  FROM public.positions_dead_letter}),
	"$stream|$poison|delivered 21 times (max 10)|21|poison",
	'dead letter: "delivered 21 times (max 10)", deliveries 21, with its fields');
is( $node->safe_psql(
		'postgres',
		q{SELECT string_agg(device_id || ' ' || stream_id, ',' ORDER BY device_id)
		  FROM public.positions}),
	"v1 $v1,v2 $v2",
	'the neighbours stored; the valid poison entry was not inserted');

# --- processor.max_deliveries = 3.

$node->safe_psql('postgres',
	q{ALTER SYSTEM SET processor.max_deliveries = 3; SELECT pg_reload_conf()});
is($node->safe_psql('postgres', 'SHOW processor.max_deliveries'),
	'3', 'max_deliveries reloaded');
# The worker rereads its configuration at its next step (block_time is
# 100 ms); the entries below cannot be claimed for claim_min_idle (1 s).

my ($at_limit, $over) = publish_to_ghost(
	$redis,
	flat('at-limit', '1767225600004'),
	flat('over', '1767225600005'));
is( $redis->cli(
		'XCLAIM', $stream, 'processor', 'ghost', '0', $over,
		'RETRYCOUNT', '3', 'JUSTID'),
	$over,
	'delivery count of one entry raised to 3');
is( $redis->cli(
		'XCLAIM', $stream, 'processor', 'ghost', '0', $at_limit,
		'RETRYCOUNT', '2', 'JUSTID'),
	$at_limit,
	'delivery count of the other raised to 2');

ok( wait_for_rows(
		$node, 'SELECT count(*) FROM public.positions_dead_letter', '2'),
	'a second dead letter');
ok(wait_for_rows($node, 'SELECT count(*) FROM public.positions', '3'),
	'the entry claimed at exactly max_deliveries landed');
ok(poll_until(sub { pending_count($redis) == 0 }), 'nothing pending');

is( $node->safe_psql(
		'postgres',
		qq{SELECT error, deliveries, fields->>'device_id'
		   FROM public.positions_dead_letter WHERE stream_id = '$over'}),
	'delivered 4 times (max 3)|4|over',
	'dead letter: "delivered 4 times (max 3)", deliveries 4');
is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) FROM public.positions WHERE device_id = 'over'}),
	'0', 'the entry over the limit was not inserted');
is( $node->safe_psql(
		'postgres',
		q{SELECT stream_id FROM public.positions WHERE device_id = 'at-limit'}),
	$at_limit,
	'the entry at the limit (3 deliveries, max 3) stored');

is( $node->safe_psql(
		'postgres',
		'SELECT claimed, inserted, dead_lettered FROM processor.stats() WHERE worker = 1'),
	'5|3|2',
	'stats: 5 claimed, 3 inserted, 2 dead-lettered');

$node->stop;
$redis->stop;

done_testing();
