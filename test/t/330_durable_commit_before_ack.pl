
# 330_durable_commit_before_ack.pl: an entry is never acknowledged before
# the commit that holds it is durable (SPEC §4).  With synchronous_commit =
# off in postgresql.conf the worker raises it to local for its own
# transactions only; a stronger setting (remote_apply) is kept as it is;
# the choice is made again after every reload.  A trigger on the target
# records the setting in force inside the worker's batch transaction.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;

use RedisServer;
use ProcessorTest;

my $redis = RedisServer->new;
my $node = new_node(
	'durable',
	redis => $redis,
	synchronous_commit => 'off');

$node->safe_psql(
	'postgres', target_table_ddl() . ';' . q{
	CREATE TABLE public.seen (device_id text, setting text);
	CREATE FUNCTION public.record_setting() RETURNS trigger
	LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO public.seen
		VALUES (NEW.device_id, current_setting('synchronous_commit'));
		RETURN NEW;
	END $$;
	CREATE TRIGGER record_setting BEFORE INSERT ON public.positions
		FOR EACH ROW EXECUTE FUNCTION public.record_setting();
	CREATE EXTENSION processor;
});

# Publish one entry and return the synchronous_commit its batch ran with.
sub setting_for
{
	my ($device) = @_;
	$redis->xadd('telemetry:t', device_id => $device, ts => '1000',
		lat => '1', lon => '2');
	ok( wait_for_rows(
			$node,
			"SELECT count(*) FROM public.seen WHERE device_id = '$device'",
			'1'),
		"$device stored");
	return $node->safe_psql('postgres',
		"SELECT setting FROM public.seen WHERE device_id = '$device'");
}

# Reload with another synchronous_commit and wait until it is in force.
sub reload_with
{
	my ($value) = @_;
	$node->safe_psql('postgres',
		"ALTER SYSTEM SET synchronous_commit = '$value'; SELECT pg_reload_conf();");
	ok($node->poll_query_until('postgres', 'SHOW synchronous_commit', $value),
		"synchronous_commit is $value for new sessions");
}

is(setting_for('off1'), 'local',
	'synchronous_commit = off is raised to local in the batch transaction');
is($node->safe_psql('postgres', 'SHOW synchronous_commit'),
	'off', 'the server setting itself is left alone');

reload_with('remote_apply');
is(setting_for('strong'), 'remote_apply',
	'a stronger setting is kept as it is');

reload_with('off');
is(setting_for('off2'), 'local',
	'after the next reload, off is raised to local again');

ok(poll_until(sub { pending_count($redis) == 0 }), 'nothing pending');

$node->stop;
$redis->stop;

done_testing();
