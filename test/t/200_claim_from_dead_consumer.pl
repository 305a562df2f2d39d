# 200_claim_from_dead_consumer.pl: the pending entries of a vanished
# consumer are claimed (SPEC §4, dead consumers).
#
# A consumer "ghost" of group "processor" reads entries with XREADGROUP and
# never acknowledges them: some before CREATE EXTENSION, some after (then in
# a MULTI/EXEC with their XADD, so that the worker cannot read them first).
# One of them is deleted from the stream (XDEL) while it is pending on ghost.
# With processor.claim_min_idle = 1s and processor.claim_interval = 1s:
#
# - every entry ghost held lands in the table, stored with its own stream id;
# - the deleted one becomes a dead letter "entry no longer in stream" with
#   fields NULL (Redis 7's XAUTOCLAIM reports deleted ids);
# - nothing is pending any more, neither on ghost nor in the group;
# - processor.stats() counts every entry taken over from ghost in "claimed";
# - the claimed entries were not taken before they were idle for
#   claim_min_idle: until then they stay on ghost.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

use RedisServer;
use ProcessorTest;

my $stream = 'telemetry:t';

# Pending count of one consumer (XINFO CONSUMERS); 0 when it is not listed.
sub consumer_pending
{
	my ($redis, $name) = @_;
	my @l = split /\n/, $redis->cli('XINFO', 'CONSUMERS', $stream, 'processor'), -1;
	my ($cur, %pending);
	while (@l >= 2)
	{
		my ($k, $v) = splice(@l, 0, 2);
		$cur = $v if $k eq 'name';
		$pending{$cur} = $v if $k eq 'pending' && defined $cur;
	}
	return $pending{$name} // 0;
}

my $redis = RedisServer->new;
my $node = new_node(
	'claim',
	redis => $redis,
	'processor.claim_min_idle' => '1s',
	'processor.claim_interval' => '1s');

# --- Before CREATE EXTENSION: the group exists (created here; the worker's
# XGROUP CREATE then gets BUSYGROUP), ghost reads 4 entries.

is($redis->cli('XGROUP', 'CREATE', $stream, 'processor', '0', 'MKSTREAM'),
	'OK', 'group created beforehand');

my @before;
for my $i (1 .. 3)
{
	push @before,
	  $redis->xadd($stream,
		device_id => "ghost-$i",
		ts => 1767225600000 + $i,
		lat => '52.1',
		lon => '4.9');
}
my $id_deleted = $redis->xadd($stream,
	device_id => 'ghost-deleted',
	ts => '1767225600999',
	lat => '1',
	lon => '2');

my $read = $redis->cli('XREADGROUP', 'GROUP', 'processor', 'ghost', 'COUNT',
	'10', 'STREAMS', $stream, '>');
like($read, qr/\Q$id_deleted\E/, 'ghost read the entries');
is(consumer_pending($redis, 'ghost'), 4, 'four entries pending on ghost');
is($redis->cli('XDEL', $stream, $id_deleted), '1',
	'one of them deleted from the stream while pending');

$node->safe_psql('postgres', 'CREATE EXTENSION processor');

# --- After CREATE EXTENSION: ghost reads 2 more, atomically with their XADD.

my @multi = (['MULTI']);
for my $i (4 .. 5)
{
	push @multi,
	  [
		'XADD', $stream, '*', 'device_id', "ghost-$i",
		'ts', 1767225600000 + $i, 'lat', '52.1', 'lon', '4.9'
	  ];
}
push @multi,
  [ 'XREADGROUP', 'GROUP', 'processor', 'ghost', 'COUNT', '10', 'STREAMS',
	$stream, '>' ];
push @multi, ['EXEC'];
$redis->pipeline(@multi);
my $t_after = time();

# The ids of the two new entries: the stream's ids that are not older ones.
my @after = grep { my $id = $_; !grep { $_ eq $id } @before }
  grep { /^\d+-\d+$/ } split /\n/, $redis->cli('XRANGE', $stream, '-', '+');
is(scalar(@after), 2, 'two more entries published');

# Not claimed before claim_min_idle: right after publishing, the two new
# entries are still ghost's.  Only checked when this poll came well within
# claim_min_idle, so a stalled machine cannot make the test flaky.
my %owner = map { $_->{id} => $_->{consumer} }
  values %{ pending_entries($redis, $stream) };
if (time() - $t_after < 0.5)
{
	is_deeply([ map { $owner{$_} // 'none' } @after ], [ 'ghost', 'ghost' ],
		'the two entries read by ghost after CREATE EXTENSION are still ghost\'s');
}
else
{
	note 'machine too slow to check the entries before claim_min_idle';
}

# A valid entry published normally goes straight through.
my $id_normal = $redis->xadd($stream,
	device_id => 'normal',
	ts => '1767225601000',
	lat => '3',
	lon => '4');

my $expected = 3 + 2 + 1;
ok(wait_for_rows($node, 'SELECT count(*) FROM public.positions', $expected),
	'every entry ghost held landed, with the normal one');
ok( wait_for_rows(
		$node, 'SELECT count(*) FROM public.positions_dead_letter', '1'),
	'the deleted entry became a dead letter');
ok(poll_until(sub { pending_count($redis) == 0 }),
	'nothing pending in the group');
is(consumer_pending($redis, 'ghost'), 0, 'nothing pending on ghost');

my %stored = map { split /\|/ } split /\n/,
  $node->safe_psql('postgres',
	q{SELECT device_id, stream_id FROM public.positions WHERE device_id LIKE 'ghost-%'});
is_deeply(
	[ map { $stored{"ghost-$_"} } 1 .. 3 ],
	\@before,
	'the entries read by ghost before CREATE EXTENSION stored with their ids');
ok( defined $stored{'ghost-4'} && defined $stored{'ghost-5'},
	'the entries read by ghost after CREATE EXTENSION stored');
is_deeply([ @stored{ 'ghost-4', 'ghost-5' } ], \@after,
	'... with the ids ghost had read');

is( $node->safe_psql(
		'postgres',
		q{SELECT stream, stream_id, fields IS NULL, error
		  FROM public.positions_dead_letter}),
	"$stream|$id_deleted|t|entry no longer in stream",
	'dead letter of the deleted entry: its id, fields NULL, "entry no longer in stream"'
);
is($node->safe_psql('postgres',
		q{SELECT count(*) FROM public.positions WHERE device_id = 'ghost-deleted'}),
	'0', 'the deleted entry was not inserted');

# claimed counts every entry taken over from ghost: 5 claimed + 1 deleted.
ok( poll_until(
		sub {
			$node->safe_psql('postgres',
				'SELECT claimed FROM processor.stats() WHERE worker = 1') eq '6';
		}),
	'processor.stats() claimed = 6 (every entry ghost held)')
  or diag $node->safe_psql('postgres', 'SELECT * FROM processor.stats()');
is( $node->safe_psql(
		'postgres',
		'SELECT inserted, dead_lettered FROM processor.stats() WHERE worker = 1'),
	'6|1',
	'stats: 6 inserted, 1 dead-lettered');

$node->stop;
$redis->stop;

done_testing();
