# 110_role_switch.pl: the worker never runs a table owner's code with
# superuser rights, and works with only the grants of SPEC §9.
#
# - Default processor.role (the bootstrap superuser), a target owned by the
#   plain role "app" and a dead-letter table owned by the plain role
#   "dlowner": a trigger on each records current_user, which is the table's
#   owner, not the superuser (the insert runs as the owner under
#   SECURITY_RESTRICTED_OPERATION: CREATE TEMP TABLE is refused there).
# - processor.role = 'ingest', a non-superuser with exactly LOGIN, CONNECT
#   on the database (revoked from PUBLIC), INSERT and SELECT on the target
#   and INSERT on the dead-letter table (both tables pre-created): the
#   worker connects as ingest and inserts positions and dead letters.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;

use RedisServer;
use ProcessorTest;

my $stream = 'telemetry:t';

my $redis = RedisServer->new;
my $node = new_node('roles', redis => $redis);

# --- Default role: inserts run as each table's owner.

$node->safe_psql(
	'postgres', q{
	CREATE ROLE app;
	CREATE ROLE dlowner;
	} . target_table_ddl() . q{;
	} . dead_letter_table_ddl() . q{;
	CREATE TABLE public.audit (tbl text, who text, restricted text);
	GRANT INSERT ON public.audit TO app, dlowner;
	ALTER TABLE public.positions OWNER TO app;
	ALTER TABLE public.positions_dead_letter OWNER TO dlowner;

	CREATE FUNCTION public.record_user() RETURNS trigger LANGUAGE plpgsql AS $$
	DECLARE
		restricted text := 'no';
	BEGIN
		BEGIN
			CREATE TEMP TABLE forbidden_in_restricted_operation (i int);
		EXCEPTION WHEN insufficient_privilege THEN
			restricted := SQLERRM;
		END;
		INSERT INTO public.audit VALUES (TG_TABLE_NAME, current_user, restricted);
		RETURN NEW;
	END $$;
	CREATE TRIGGER record_user BEFORE INSERT ON public.positions
		FOR EACH ROW EXECUTE FUNCTION public.record_user();
	CREATE TRIGGER record_user BEFORE INSERT ON public.positions_dead_letter
		FOR EACH ROW EXECUTE FUNCTION public.record_user();
	CREATE EXTENSION processor;
});

$redis->xadd($stream, device_id => 'd1', ts => '1000', lat => '1', lon => '2');
$redis->xadd($stream, device_id => 'd1', ts => '2000', lat => '91', lon => '2');
ok( wait_for_rows(
		$node,
		'SELECT (SELECT count(*) FROM public.positions),
		        (SELECT count(*) FROM public.positions_dead_letter)',
		'1|1'),
	'default role: one position and one dead letter stored');
my $sro = 'cannot create temporary table within security-restricted operation';
is( $node->safe_psql(
		'postgres', 'SELECT tbl, who, restricted FROM public.audit ORDER BY tbl'),
	"positions|app|$sro\npositions_dead_letter|dlowner|$sro",
	'triggers ran as the owner of each table, in a security-restricted operation');
is( $node->safe_psql(
		'postgres', q{SELECT r.rolsuper FROM pg_stat_activity a
		  JOIN pg_roles r ON r.rolname = a.usename
		  WHERE a.backend_type = 'processor'}),
	't', 'while the worker itself runs as a superuser');
ok(poll_until(sub { pending_count($redis) == 0 }), 'nothing pending');

# --- A dedicated role with only the grants of SPEC §9.

$node->safe_psql(
	'postgres', q{
	DROP TRIGGER record_user ON public.positions;
	DROP TRIGGER record_user ON public.positions_dead_letter;
	CREATE ROLE ingest LOGIN;
	REVOKE CONNECT ON DATABASE postgres FROM PUBLIC;
	GRANT CONNECT ON DATABASE postgres TO ingest;
	GRANT INSERT, SELECT ON public.positions TO ingest;
	GRANT INSERT ON public.positions_dead_letter TO ingest;
});
$node->append_conf('postgresql.conf', "processor.role = 'ingest'\n");
$node->restart;

ok( wait_for_rows(
		$node,
		q{SELECT usename FROM pg_stat_activity WHERE backend_type = 'processor'},
		'ingest'),
	'the worker connects as ingest');
my $valid =
  $redis->xadd($stream, device_id => 'd2', ts => '1000', lat => '3', lon => '4');
my $invalid = $redis->xadd($stream, device_id => 'd2', lat => '3', lon => '4');
ok( wait_for_rows(
		$node,
		qq{SELECT (SELECT stream_id FROM public.positions WHERE device_id = 'd2'),
		          (SELECT error FROM public.positions_dead_letter
		            WHERE stream_id = '$invalid')},
		"$valid|missing key: ts"),
	'ingest inserts a position and a dead letter');
ok(poll_until(sub { pending_count($redis) == 0 }), 'nothing pending');
is($node->safe_psql('postgres', 'SELECT last_error FROM processor.stats()'),
	'', 'no error on the way');

$node->stop;
$redis->stop;
done_testing();
