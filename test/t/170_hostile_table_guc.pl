
# 170_hostile_table_guc.pl: a table GUC can never inject SQL (SPEC §2, §7;
# issue 6).
#
# - processor.target_table = 'positions; DROP TABLE x; --' written to
#   postgresql.conf is refused at reload by the check hook: PostgreSQL logs
#   the invalid value, the server keeps the old value, the worker keeps
#   inserting into public.positions, and table x still exists with its row.
#   ALTER SYSTEM refuses the same value with PostgreSQL's GUC error.
# - Quoted, weird but valid names are identifiers, not SQL:
#   processor.target_table = '"Pos; DROP TABLE x"' and
#   processor.dead_letter_table = 'public."dl""; DROP TABLE x; --"' make the
#   worker create exactly those two tables, insert into them, and leave x
#   alone.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;

use RedisServer;
use ProcessorTest;

my $stream = 'telemetry:t';

my $redis = RedisServer->new;
my $node = new_node('hostile_guc', redis => $redis);
$node->safe_psql('postgres', q{
	CREATE EXTENSION processor;
	CREATE TABLE public.x (id int);
	INSERT INTO public.x VALUES (42);
});

my $seq = 0;
sub publish
{
	my (@pairs) = @_;
	$seq++;
	return $redis->xadd($stream, ts => 1767225600000 + $seq, @pairs);
}

sub x_intact
{
	return $node->safe_psql('postgres',
		q{SELECT to_regclass('public.x') IS NOT NULL
		     AND (SELECT array_agg(id) FROM public.x) = '{42}'});
}

publish(device_id => 'before', lat => '1', lon => '2');
ok( wait_for_rows(
		$node,
		q{SELECT count(*) FROM public.positions WHERE device_id = 'before'},
		'1'),
	'worker running: entry lands in public.positions');

# --- A malformed value in postgresql.conf is refused at reload.

my $hostile = 'positions; DROP TABLE x; --';
my $offset = -s $node->logfile;
$node->append_conf('postgresql.conf', "processor.target_table = '$hostile'\n");
$node->reload;
ok( $node->wait_for_log(
		qr/invalid value for parameter "processor\.target_table": "\Q$hostile\E"/,
		$offset),
	'reload: the check hook refuses the value, PostgreSQL logs it as invalid');
ok( $node->wait_for_log(
		qr/configuration file ".*postgresql\.conf" contains errors; unaffected changes were applied/,
		$offset),
	'reload: the rest of the file is applied, the server stays up');
is($node->safe_psql('postgres', 'SHOW processor.target_table'),
	'public.positions', 'the server keeps the old value');

publish(device_id => 'after-hostile', lat => '1', lon => '2');
ok( wait_for_rows(
		$node,
		q{SELECT count(*) FROM public.positions WHERE device_id = 'after-hostile'},
		'1'),
	'the worker keeps inserting into public.positions');
is(x_intact(), 't', 'table x still exists with its row');

my ($rc, $out, $err) = $node->psql('postgres',
	"ALTER SYSTEM SET processor.target_table = '$hostile'");
isnt($rc, 0, 'ALTER SYSTEM refuses the value too');
like($err,
	qr/invalid value for parameter "processor\.target_table": "\Q$hostile\E"/,
	'with PostgreSQL\'s GUC error');

# --- Quoted weird names are identifiers.

$node->adjust_conf('postgresql.conf', 'processor.target_table', undef);
$node->append_conf('postgresql.conf', q{
processor.target_table = '"Pos; DROP TABLE x"'
processor.dead_letter_table = 'public."dl""; DROP TABLE x; --"'
});
$offset = -s $node->logfile;
$node->reload;
ok(poll_until(sub {
		$node->safe_psql('postgres', 'SHOW processor.dead_letter_table') eq
		  'public."dl""; DROP TABLE x; --"' }),
	'the quoted names are accepted');

publish(device_id => 'weird-name', lat => '1', lon => '2');
publish(device_id => 'weird-name', lat => '91', lon => '2');
ok( wait_for_rows(
		$node,
		q{SELECT count(*) FROM public."Pos; DROP TABLE x" WHERE device_id = 'weird-name'},
		'1'),
	'the worker creates public."Pos; DROP TABLE x" and inserts into it');
ok( wait_for_rows(
		$node,
		q{SELECT error FROM public."dl""; DROP TABLE x; --"},
		'lat out of range: 91'),
	'and public."dl""; DROP TABLE x; --" for the dead letter');
ok(poll_until(sub { pending_count($redis) == 0 }), 'nothing pending');

is( $node->safe_psql(
		'postgres', q{
	SELECT string_agg(relname, ' | ' ORDER BY relname COLLATE "C")
	  FROM pg_class
	 WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p')}),
	'Pos; DROP TABLE x | dl"; DROP TABLE x; -- | positions | positions_dead_letter | x',
	'exactly those tables exist in public, nothing else was created');
is(x_intact(), 't', 'table x still exists with its row');
is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) FROM public.positions WHERE device_id = 'weird-name'}),
	'0', 'nothing went to the old target');

my $log = slurp_file($node->logfile);
unlike($log, qr/syntax error/, 'no SQL syntax error anywhere in the log');
unlike($log, qr/terminated by signal/, 'the server never crashed');

$node->stop;
$redis->stop;

done_testing();
