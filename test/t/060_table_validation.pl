# 060_table_validation.pl: an existing target table is validated, never
# altered (SPEC §2):
# - public.positions pre-created without a unique key on (device_id, ts):
#   the worker does not consume (no row, the entry not delivered) and logs
#   a message naming the table and the columns; after ALTER TABLE ... ADD
#   PRIMARY KEY (device_id, ts) and a reload, the entry lands;
# - a column of a type the worker's value cannot be assigned to (lat point)
#   is refused with a message naming the column;
# - a user's partitioned target (PARTITION BY RANGE (ts), one partition
#   covering the data, PRIMARY KEY (device_id, ts)) works.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

use RedisServer;
use ProcessorTest;

my $stream = 'telemetry:t';

# Stream ids compare as two numbers.
sub id_lt
{
	my ($a, $b) = @_;
	my @a = split /-/, $a;
	my @b = split /-/, $b;
	return $a[0] < $b[0] || ($a[0] == $b[0] && $a[1] < $b[1]);
}

# True when group "processor" has neither delivered $id nor has it pending:
# the worker left it alone.
sub not_consumed
{
	my ($redis, $id) = @_;
	my $g = stream_groups($redis, $stream)->{processor};
	return 1 unless defined $g;
	return $g->{pending} eq '0' && id_lt($g->{'last-delivered-id'}, $id);
}

sub position
{
	my ($device, $ts) = @_;
	return (
		device_id => $device,
		ts => $ts // '2026-03-01T00:00:00Z',
		lat => '1',
		lon => '2');
}

my $redis = RedisServer->new;
my $node = new_node('validation', redis => $redis);

my $worker_pid = sub {
	return $node->safe_psql('postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'processor'});
};

# --- No unique key on (device_id, ts).

$node->safe_psql('postgres', target_table_ddl(primary_key => 0));
# A unique index on other columns does not count.
$node->safe_psql('postgres',
	'CREATE UNIQUE INDEX positions_sid ON public.positions (stream_id)');

my $offset = -s $node->logfile;
my $id1 = $redis->xadd($stream, position('no-key'));
$node->safe_psql('postgres', 'CREATE EXTENSION processor');

ok( $node->wait_for_log(
		qr/processor worker 1: table "positions" has no unique index or primary key on exactly \(device_id, ts\)/,
		$offset),
	'no unique key: the log names the table and the columns');
my $pid = $worker_pid->();
usleep(1_500_000);
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.positions'),
	'0', 'no row inserted');
ok(not_consumed($redis, $id1), 'the entry is not consumed');
is($redis->cli('XLEN', $stream), '1', 'the entry is still in the stream');
is($worker_pid->(), $pid, 'the worker waits in place (same pid)');

$node->safe_psql('postgres',
	'ALTER TABLE public.positions ADD PRIMARY KEY (device_id, ts)');
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
ok( wait_for_rows(
		$node, q{SELECT stream_id FROM public.positions WHERE device_id = 'no-key'},
		$id1),
	'after ADD PRIMARY KEY and a reload, the entry lands');
ok(poll_until(sub { pending_count($redis) == 0 }), 'nothing pending');

# --- A column of the wrong type.

$node->safe_psql('postgres',
	target_table_ddl(name => 'public.pos_badtype', types => { lat => 'point' }));
$offset = -s $node->logfile;
$node->safe_psql('postgres',
	q{ALTER SYSTEM SET processor.target_table = 'public.pos_badtype'});
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
ok( $node->wait_for_log(
		qr/processor worker 1: column "lat" of table "pos_badtype" has type point/,
		$offset),
	'wrong column type: the log names the column and its type');

my $id2 = $redis->xadd($stream, position('bad-type'));
usleep(1_500_000);
ok(not_consumed($redis, $id2), 'the entry is not consumed');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.pos_badtype'),
	'0', 'nothing in the refused table');
is($node->safe_psql('postgres', 'SELECT count(*) FROM public.positions'),
	'1', 'nor in the previous target');

# --- A partitioned target.

$node->safe_psql(
	'postgres',
	target_table_ddl(name => 'public.pos_part', partition_by => 'RANGE (ts)')
	  . q{;
	CREATE TABLE public.pos_part_2026 PARTITION OF public.pos_part
		FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
});
$node->safe_psql('postgres',
	q{ALTER SYSTEM SET processor.target_table = 'public.pos_part'});
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');

my $id3 = $redis->xadd($stream, position('part', '2026-06-01T12:00:00Z'));
ok( wait_for_rows(
		$node,
		q{SELECT string_agg(tableoid::regclass || ' ' || device_id || ' ' || stream_id,
		  ',' ORDER BY stream_id) FROM public.pos_part},
		"pos_part_2026 bad-type $id2,pos_part_2026 part $id3"),
	'partitioned target: both entries land in the partition');
ok(poll_until(sub { pending_count($redis) == 0 }), 'nothing pending');
is($worker_pid->(), $pid, 'the same worker throughout');

$node->stop;
$redis->stop;

done_testing();
