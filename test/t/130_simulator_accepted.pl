# 130_simulator_accepted.pl: what the load generator (bench/loadgen, used by
# the benchmark and the demo) sends is what processor accepts, and its
# summary line tells exactly what lands where.
#
# - Invalid share 0, both encodings, 5 % duplicates, 10 % out-of-order
#   positions: no dead letter; every position lands (count = sent -
#   duplicates = normal + out_of_order); the worker counts exactly the
#   generator's duplicates as duplicates; exactly the generator's
#   out-of-order positions are older than an earlier position of their
#   device in stream order; every row's attributes hold the Buffer as base64
#   and the 21-digit integer with every digit; each device's state is its
#   position with the greatest ts.
# - Invalid share 10 % of 1000 with a fixed seed: exactly the invalid
#   entries that the generator reports become dead letters, each with a
#   catalogue message of one of the generator's 14 kinds (all of which
#   occur), and the valid ones land next to the first run's rows.

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;

use RedisServer;
use ProcessorTest;

my $srcdir = $ENV{TESTDIR} or die "TESTDIR is not set (run through make tapcheck)";
my $loadgen = "$srcdir/bench/loadgen";

# Build the generator in the tree the tests run from (make test runs them in
# a copy owned by the test user).
{
	my ($out, $err) = ('', '');
	my $built = IPC::Run::run(
		[ 'make', '--no-print-directory', '-C', $srcdir, 'bench/loadgen' ],
		'<', \undef, '>', \$out, '2>', \$err);
	ok($built && -x $loadgen, 'bench/loadgen builds') or do
	{
		diag "make bench/loadgen:\n$out$err";
		done_testing();
		exit;
	};
}

# Run the generator; returns its summary as a hash (sent => N, ...).
sub loadgen
{
	my ($redis, @args) = @_;
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run(
		[ $loadgen, '--quiet', '--port', $redis->port, @args ],
		'<', \undef, '>', \$out, '2>', \$err);
	ok($ok, "loadgen @args: exit status 0") or diag "stdout: $out\nstderr: $err";
	note "loadgen @args: $out";
	my %summary = $out =~ /(\w+)=([\d.]+)/g;
	return \%summary;
}

my $redis = RedisServer->new;
my $node = new_node('simulator', redis => $redis);
$node->safe_psql('postgres', 'CREATE EXTENSION processor');
ok(wait_for_rows($node, 'SELECT status FROM processor.stats()', 'running'),
	'worker running');

# --- 1. Valid entries only: duplicates and out-of-order positions included.

my $first = loadgen(
	$redis,
	'--count' => 1000, '--devices' => 50, '--encoding' => 'mixed',
	'--dup' => 5, '--ooo' => 10, '--invalid' => 0, '--seed' => 42);

is($first->{sent}, 1000, 'the generator sent 1000 entries');
is($first->{errors}, 0, 'every XADD succeeded');
is($first->{invalid}, 0, 'no invalid entry with --invalid 0');
cmp_ok($first->{duplicate}, '>', 0, 'some duplicates');
cmp_ok($first->{out_of_order}, '>', 0, 'some out-of-order positions');
cmp_ok($first->{json}, '>', 0, 'some entries in the JSON encoding');
cmp_ok($first->{flat}, '>', 0, 'some entries in the flat encoding');
is( $first->{rows},
	$first->{sent} - $first->{duplicate},
	'the generator expects sent - duplicates rows');

ok( wait_for_rows(
		$node, 'SELECT count(*) FROM public.positions', $first->{rows}),
	"all $first->{rows} positions landed");
ok(poll_until(sub { pending_count($redis) == 0 }), 'everything acknowledged');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.positions_dead_letter'),
	'0', 'no dead letter');
is( $node->safe_psql(
		'postgres', 'SELECT inserted, duplicates, dead_lettered FROM processor.stats()'),
	"$first->{rows}|$first->{duplicate}|0",
	"the worker counted the generator's duplicates as duplicates");

# A row is out of order when an earlier entry of its device in the stream
# has a greater ts (the stream id orders entries).
is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FILTER (WHERE ts < earlier_max)
	FROM (SELECT ts, max(ts) OVER (PARTITION BY device_id
	                               ORDER BY split_part(stream_id, '-', 1)::bigint,
	                                        split_part(stream_id, '-', 2)::bigint
	                               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
	                 AS earlier_max
	      FROM public.positions) s}),
	$first->{out_of_order},
	'exactly the out-of-order positions arrived after a newer one of their device');

is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM public.positions
	WHERE jsonb_typeof(attributes->'78') = 'string'
	  AND decode(attributes->>'78', 'base64') IS NOT NULL
	  AND length(decode(attributes->>'78', 'base64')) = 8
	  AND (attributes->'16')::text ~ '^[1-9][0-9]{20}$'
	  AND jsonb_typeof(attributes->'16') = 'number'
	  AND (SELECT count(*) FROM jsonb_object_keys(attributes)) >= 10}),
	$first->{rows},
	'every row: ten attributes, the Buffer as base64, the 21-digit integer exact');

is( $node->safe_psql(
		'postgres', q{
	SELECT count(*) FROM processor.device_state s
	JOIN (SELECT DISTINCT ON (device_id) device_id, ts, lat, lon
	      FROM public.positions ORDER BY device_id, ts DESC) p
	  ON p.device_id = s.device_id AND p.ts = s.ts
	 AND p.lat = s.lat AND p.lon = s.lon}),
	'50',
	'each device state is its position with the greatest ts, out-of-order ones notwithstanding'
);

# --- 2. 10 % invalid entries, one day later (no (device_id, ts) in common).

my $second = loadgen(
	$redis,
	'--count' => 1000, '--devices' => 50, '--encoding' => 'mixed',
	'--dup' => 5, '--ooo' => 5, '--invalid' => 10, '--seed' => 7,
	'--start-ts' => 1767225600000 + 86_400_000);

is($second->{sent}, 1000, 'the generator sent 1000 more entries');
is($second->{errors}, 0, 'every XADD succeeded');
cmp_ok($second->{invalid}, '>=', 50, 'about 10 % invalid entries');
cmp_ok($second->{invalid}, '<=', 150, 'about 10 % invalid entries, not more');

ok( wait_for_rows(
		$node,
		'SELECT count(*) FROM public.positions_dead_letter',
		$second->{invalid}),
	"$second->{invalid} dead letters, as many as the generator reports");
ok(poll_until(sub { pending_count($redis) == 0 }), 'everything acknowledged');
is( $node->safe_psql('postgres', 'SELECT count(*) FROM public.positions'),
	$first->{rows} + $second->{rows},
	'the valid entries of the second run landed too');
is($node->safe_psql('postgres', 'SELECT dead_lettered FROM processor.stats()'),
	$second->{invalid}, 'the worker counted them as dead-lettered');

# The generator's 14 kinds of invalid entries and the message each gets.
my %kinds = (
	'missing ts' => qr/^missing key: ts$/,
	'lat out of range' => qr/^lat out of range: /,
	'lon out of range' => qr/^lon out of range: /,
	'lat not a number' => qr/^lat is not a number: /,
	'broken JSON' => qr/^invalid JSON( in attributes)?: /,
	'device_id too long' => qr/^device_id too long: \d+ bytes \(max 64\)$/,
	'satellites out of range' => qr/^satellites out of range: /,
	'invalid ts' => qr/^invalid ts: /,
	'ts without zone' => qr/^ts has no time zone: /,
	'negative speed' => qr/^speed out of range: -/,
	'heading out of range' => qr/^heading out of range: /,
	'duplicate key' => qr/^duplicate key: lat$/,
	'attributes not an object' => qr/^attributes is not an object: /,
	'no payload, no device_id' =>
	  qr/^entry has neither a payload field nor a device_id field$/);
my @errors = split /\n/,
  $node->safe_psql('postgres',
	'SELECT error FROM public.positions_dead_letter ORDER BY stream_id');
my (%seen, @unexpected);
foreach my $error (@errors)
{
	my @match = grep { $error =~ $kinds{$_} } sort keys %kinds;
	if (@match) { $seen{ $match[0] }++ }
	else { push @unexpected, $error }
}
is_deeply(\@unexpected, [], 'every dead letter has the message of its kind')
  or diag explain \@unexpected;
is_deeply([ sort keys %seen ], [ sort keys %kinds ],
	'all 14 kinds of invalid entries occurred')
  or diag explain \%seen;

$node->stop;
$redis->stop;

done_testing();
