# 020_immediate_stop_no_loss.pl: "pg_ctl stop -m immediate" while the
# worker is in the middle of a stream loses nothing and stores nothing
# twice (SPEC §4: commit, then XACK; resumption reads the consumer's own
# pending entries first).
#
# 20 000 entries are published before CREATE EXTENSION; with
# processor.batch_size = 200 the worker needs about a hundred batches, and
# the server is stopped in immediate mode (SIGQUIT, no shutdown checkpoint)
# as soon as the first rows are visible.  Redis then shows that the worker
# had not finished (entries unread or unacknowledged).  After a restart,
# every entry is present exactly once and the pending list is empty.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

use RedisServer;
use ProcessorTest;

my $stream = 'telemetry:t';
my $total = 20_000;

my $redis = RedisServer->new;
my $node = new_node(
	'immediate',
	redis => $redis,
	'processor.batch_size' => 200);

# 20 000 distinct (device_id, ts), both encodings, in one pipeline.
my @commands;
for my $i (1 .. $total)
{
	my $device = 'dev-' . ($i % 100);
	my $ts = 1767225600000 + $i;
	if ($i % 2)
	{
		push @commands,
		  [
			'XADD', $stream, '*', 'device_id', $device, 'ts', $ts,
			'lat', '52.1', 'lon', '4.9'
		  ];
	}
	else
	{
		push @commands,
		  [
			'XADD', $stream, '*', 'payload',
			qq({"device_id":"$device","ts":$ts,"lat":52.1,"lon":4.9,"speed":$i})
		  ];
	}
}
is($redis->pipeline(@commands), $total, "$total entries published");
is($redis->cli('XLEN', $stream), $total, 'all of them in the stream');

$node->safe_psql('postgres', 'CREATE EXTENSION processor');

# Stop as soon as the first batch is visible.  A persistent session keeps
# each poll to a query, not a psql start; the query fails until the worker
# has created the table.
my $session = $node->background_psql('postgres', on_error_stop => 0);
my $seen = 0;
my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
while (time() < $deadline)
{
	my $out = $session->query('SELECT count(*) FROM public.positions');
	$seen = $out if defined $out && $out =~ /^\d+$/;
	last if $seen > 0;
	usleep(5_000);
}
$session->quit;
cmp_ok($seen, '>', 0, "rows started to land ($seen seen)");

$node->stop('immediate');

# With the server down, Redis tells how far the worker got.
my $g = stream_groups($redis, $stream)->{processor};
my $unread = $g->{lag} ne '' ? $g->{lag} : $total - ($g->{'entries-read'} || 0);
note "at the stop: pending $g->{pending}, lag $g->{lag},"
  . " entries-read $g->{'entries-read'}";
ok($unread > 0 || $g->{pending} > 0,
	'the stop came mid-stream: entries left unread or unacknowledged');

$node->start;

ok( wait_for_rows(
		$node, 'SELECT count(*) FROM public.positions', $total),
	'every entry stored after the restart');
ok(poll_until(sub { pending_count($redis) == 0 }),
	'nothing pending in the group');

is( $node->safe_psql(
		'postgres',
		'SELECT count(*), count(DISTINCT stream_id), count(DISTINCT (device_id, ts))
		 FROM public.positions'),
	"$total|$total|$total",
	'each entry exactly once');

# The stream ids stored are exactly the stream's ids.
my @ids = split /\n/, $redis->cli('XRANGE', $stream, '-', '+');
@ids = grep { /^\d+-\d+$/ } @ids;
is(scalar(@ids), $total, 'XRANGE lists every id');
my $stored = $node->safe_psql('postgres',
	'SELECT string_agg(stream_id, E\'\n\' ORDER BY stream_id COLLATE "C")
	 FROM public.positions');
is($stored, join("\n", sort @ids), 'stored stream ids = the stream\'s ids');

is($node->safe_psql('postgres', 'SELECT count(*) FROM public.positions_dead_letter'),
	'0', 'no dead letters');

$node->stop;
$redis->stop;

done_testing();
