
# 095_devices_concurrent_readers.pl: readers of processor.devices() never
# see a torn row and never fail while the worker writes (SPEC §5: readers
# copy at most 1000 devices per lock hold).  Two waves of positions for
# 100 000 devices (processor.max_devices, the default) are drained while
# pgbench clients run SELECT over processor.devices() in a loop; every
# field of a position encodes its wave, so a row mixing two positions is
# caught.  Timing is not measured here (that is the benchmark's job); the
# drain time is only noted.

use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

use RedisServer;
use ProcessorTest;

my $ndevices = 100_000;
my $nwaves = 2;

my $redis = RedisServer->new;
my $node = new_node('readers', redis => $redis,
	'processor.batch_size' => 1000,
	log_min_messages => 'warning');

# Wave w, device i: ts = w * 10^9 + i ms, every other field = w.
for my $w (1 .. $nwaves)
{
	my @cmds;
	for my $i (1 .. $ndevices)
	{
		push @cmds,
		  [ 'XADD', 'telemetry:t', '*',
			device_id => "dev$i", ts => $w * 1_000_000_000 + $i,
			lat => $w, lon => $w, altitude => $w, speed => $w,
			heading => $w, satellites => $w ];
	}
	$redis->pipeline(@cmds);
}
is($redis->cli('XLEN', 'telemetry:t'), $ndevices * $nwaves, 'stream loaded');

# A reader transaction fails (division by zero) on a torn row, on a row
# whose last_seen is not its ts, or on more rows than the capacity.
my $script = "${PostgreSQL::Test::Utils::tmp_check}/095_readers.sql";
open(my $fh, '>', $script) or die "$script: $!";
print $fh <<'SQL';
SELECT 1 / ((bad = 0 AND n <= 100000)::int)
  FROM (SELECT count(*) AS n,
               count(*) FILTER (WHERE NOT (
                   lat = lon AND lat = altitude AND lat = speed
                   AND lat = heading AND lat = satellites
                   AND lat = floor(extract(epoch FROM ts) / 1000000)
                   AND last_seen = ts)) AS bad
          FROM processor.devices()) s;
SQL
close($fh);

$node->safe_psql('postgres', 'CREATE EXTENSION processor');

# pgbench runs while the worker drains the stream.
my ($out, $err) = ('', '');
my $started = time();
my $pgbench = IPC::Run::start(
	[ 'pgbench', '-n', '-c', '4', '-j', '4', '-T', '15', '-f', $script,
	  '-h', $node->host, '-p', $node->port, 'postgres' ],
	'>', \$out, '2>', \$err);

ok( wait_for_rows(
		$node, 'SELECT count(*) FROM public.positions',
		$ndevices * $nwaves),
	'every position inserted');
my $drained = time() - $started;
note sprintf('drained %d entries in %.1f s with 4 readers', $ndevices * $nwaves,
	$drained);
ok(poll_until(sub { pending_count($redis) == 0 }), 'nothing pending');

ok($pgbench->finish, 'pgbench readers exit 0') or diag "$out\n$err";
like($out, qr/number of failed transactions: 0 /, 'no reader failed');
my ($tx) = $out =~ /number of transactions actually processed: (\d+)/;
ok(defined $tx && $tx > 0, 'readers ran ' . ($tx // 0) . ' scans');
note $out;

# The final state: every device at its last wave, seen once per wave.
is( $node->safe_psql(
		'postgres', q{
	SELECT count(*), min(lat), max(lat), min(positions_seen), max(positions_seen)
	  FROM processor.devices()}),
	"$ndevices|$nwaves|$nwaves|$nwaves|$nwaves",
	'every device holds its last wave and counted every position');
is( $node->safe_psql(
		'postgres', 'SELECT devices, capacity, evicted_total FROM processor.state_info()'),
	"$ndevices|$ndevices|0",
	'state_info: full, nothing evicted');
is( $node->safe_psql(
		'postgres', q{SELECT lat, positions_seen FROM processor.device('dev77777')}),
	"$nwaves|$nwaves",
	'device(text) finds one of 100 000');

$node->stop;
$redis->stop;
done_testing();
