
# 140_redis_auth.pl: Redis authentication and the secrecy of the password
# (SPEC §7, §9; issue 6):
#
# (a) Redis with requirepass, processor.redis_password_file pointing at a
#     file (mode 0600, owned by the server's user): entries land; the
#     password is in no line of the server log and in no column of
#     pg_stat_activity;
# (b) an ACL user limited to the stream commands the worker needs and to
#     keys telemetry:*, processor.redis_user = 'ingest' (reload): the worker
#     reconnects as that user (CLIENT LIST) and entries land;
# (c) a wrong password in the file: the worker stays up (same pid), logs one
#     "Redis authentication failed" line per backoff step, and
#     processor.stats() says so in last_error without any password; the
#     correct password written to the file and a reload: entries land;
# (d) a role without pg_read_all_settings can neither SHOW nor find in
#     pg_settings processor.redis_password or processor.redis_password_file;
#     a member of pg_read_all_settings can SHOW processor.redis_password
#     (PostgreSQL's own rule, which is why the README recommends the file).
#
# At the end, none of the passwords (right, wrong, ACL, and the unused
# processor.redis_password) appears anywhere in the server log.

use strict;
use warnings;

use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use RedisServer;
use ProcessorTest;

my $stream = 'telemetry:t';

# Distinct, unguessable passwords, so that a hit in a log is never a
# coincidence.
sub secret
{
	my ($tag) = @_;
	return sprintf('pw140-%s-%08x%08x', $tag, int(rand(2**32)),
		int(rand(2**32)));
}
my $password = secret('default');
my $acl_password = secret('acl');
my $wrong_password = secret('wrong');
my $guc_password = secret('guc');
my @secrets = ($password, $acl_password, $wrong_password, $guc_password);

# Write the password file: mode 0600, owned by us (the server's user).
my $pwfile = PostgreSQL::Test::Utils::tempdir() . '/redis_password';
sub write_password
{
	my ($pw) = @_;
	open my $fh, '>', $pwfile or die "could not write $pwfile: $!";
	print $fh "$pw\n";
	close $fh;
	chmod 0600, $pwfile or die "chmod $pwfile: $!";
	return;
}
write_password($password);

# redis-cli (RedisServer->cli, pending_count) authenticates with this.
$ENV{REDISCLI_AUTH} = $password;
my $redis = RedisServer->new(args => [ '--requirepass', $password ]);

my $node = new_node(
	'auth',
	redis => $redis,
	'processor.redis_password_file' => $pwfile,
	# set but unused (the file wins): it must stay invisible all the same
	'processor.redis_password' => $guc_password);

my $seq = 0;
sub publish
{
	my ($device) = @_;
	$seq++;
	return $redis->xadd($stream, device_id => $device, ts => 1767225600000 + $seq,
		lat => '1', lon => '2');
}

sub worker_pid
{
	return $node->safe_psql('postgres',
		q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'processor'});
}

# Every secret that occurs in $text, for a readable failure.
sub leaked
{
	my ($text) = @_;
	return join(', ', grep { index($text, $_) >= 0 } @secrets);
}

sub activity_text
{
	return $node->safe_psql('postgres',
		q{SELECT string_agg(a::text, E'\n') FROM pg_stat_activity a});
}

# --- (a) requirepass and the password file

is((stat $pwfile)[2] & 07777, 0600, 'password file has mode 0600');
is((stat $pwfile)[4], $>, 'password file is owned by the server\'s user');

$node->safe_psql('postgres', 'CREATE EXTENSION processor');
publish('auth-file');
ok( wait_for_rows(
		$node,
		q{SELECT count(*) FROM public.positions WHERE device_id = 'auth-file'},
		'1'),
	'(a) password from processor.redis_password_file: the entry lands');
ok(poll_until(sub { pending_count($redis) == 0 }), '(a) nothing pending');

my $pid = worker_pid();
like($pid, qr/^\d+$/, 'worker running');
is(leaked(activity_text()), '', '(a) no password in pg_stat_activity');

# --- (b) an ACL user with only what the worker needs

is( $redis->cli(
		'ACL', 'SETUSER', 'ingest', 'on', ">$acl_password", '~telemetry:*',
		'resetchannels', '-@all',
		map { "+$_" } qw(xreadgroup xack xgroup xinfo xautoclaim xclaim
		  xpending ping auth select)),
	'OK',
	'ACL user "ingest" created');

my $offset = -s $node->logfile;
write_password($acl_password);
$node->safe_psql('postgres',
	q{ALTER SYSTEM SET processor.redis_user = 'ingest'});
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');

ok( poll_until(
		sub { $redis->cli('CLIENT', 'LIST') =~ /\buser=ingest\b/ }),
	'(b) the worker reconnects as ACL user "ingest"');
publish('auth-acl');
ok( wait_for_rows(
		$node,
		q{SELECT count(*) FROM public.positions WHERE device_id = 'auth-acl'},
		'1'),
	'(b) AUTH ingest <password>: the entry lands');
ok(poll_until(sub { pending_count($redis) == 0 }), '(b) nothing pending');
my @clients = grep { /\bcmd=/ && !/\bcmd=client\|list\b/ }
  split /\n/, $redis->cli('CLIENT', 'LIST');
is(scalar(grep { !/\buser=ingest\b/ } @clients), 0,
	'(b) no worker connection as the default user remains')
  or diag join("\n", @clients);
is(count_log($node, qr/authentication failed/, $offset), 0,
	'(b) no authentication failure logged');

# --- (c) a wrong password, then the right one

write_password($wrong_password);
$offset = -s $node->logfile;
$node->safe_psql('postgres', 'ALTER SYSTEM RESET processor.redis_user');
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
ok( $node->wait_for_log(
		qr/processor worker 1: Redis authentication failed/, $offset),
	'(c) wrong password: "Redis authentication failed" is logged');
my $t0 = time();
my $offset_c = -s $node->logfile;
usleep(3_000_000);
my $failures = count_log($node, qr/Redis authentication failed/, $offset_c);
my $limit = max_failures(time() - $t0);
note sprintf('%d authentication failures logged in %.1f s (at most %d)',
	$failures, time() - $t0, $limit);
cmp_ok($failures, '>=', 1, '(c) the failure keeps being retried');
cmp_ok($failures, '<=', $limit,
	'(c) at most one line per backoff step (no busy loop)');
is(worker_pid(), $pid, '(c) same worker pid: no crash loop');
is(count_log($node, qr/background worker "processor" \(PID \d+\) exited/),
	0, '(c) no worker exit in the log');

my $stats = $node->safe_psql('postgres',
	q{SELECT redis_connected, last_error FROM processor.stats()});
like($stats, qr/^f\|.*authentication failed/,
	'(c) processor.stats(): not connected, last_error says authentication failed'
);
is(leaked($stats), '', '(c) last_error holds no password');
is(leaked(activity_text()), '', '(c) no password in pg_stat_activity');

publish('auth-fixed');
write_password($password);
$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
ok( wait_for_rows(
		$node,
		q{SELECT count(*) FROM public.positions WHERE device_id = 'auth-fixed'},
		'1'),
	'(c) corrected password file and a reload: the entry lands');
ok(poll_until(sub { pending_count($redis) == 0 }), '(c) nothing pending');
is(worker_pid(), $pid, '(c) still the same worker pid');
is( $node->safe_psql('postgres',
		'SELECT redis_connected, redis_reconnects >= 2 FROM processor.stats()'),
	't|t',
	'(c) connected again; the reconnects were counted');

# (c') a password file that is missing, then one that cannot be read (a
# directory): a clear line each, the worker waits; the right file again and
# entries land.
sub point_password_file_at
{
	my ($path) = @_;
	$node->safe_psql('postgres',
		"ALTER SYSTEM SET processor.redis_password_file = '$path'");
	$node->safe_psql('postgres', 'SELECT pg_reload_conf()');
}
$offset = -s $node->logfile;
point_password_file_at("$pwfile.missing");
ok( $node->wait_for_log(
		qr/could not open processor\.redis_password_file "\Q$pwfile.missing\E": No such file/,
		$offset),
	"(c') a missing password file is named in the log");
$offset = -s $node->logfile;
my $pwdir = PostgreSQL::Test::Utils::tempdir();
point_password_file_at($pwdir);
ok( $node->wait_for_log(
		qr/could not read processor\.redis_password_file "\Q$pwdir\E"/,
		$offset),
	"(c') an unreadable password file (a directory) is named in the log");
publish('auth-file-back');
point_password_file_at($pwfile);
ok( wait_for_rows(
		$node,
		q{SELECT count(*) FROM public.positions WHERE device_id = 'auth-file-back'},
		'1'),
	"(c') the right file again: the entry lands");
is(worker_pid(), $pid, "(c') still the same worker pid");

# --- (d) who may read the settings

$node->safe_psql('postgres', q{
	CREATE ROLE alice LOGIN;
	CREATE ROLE bob LOGIN IN ROLE pg_read_all_settings;
});

# Run $sql as $user; returns (exit code, stdout, stderr).
sub psql_as
{
	my ($user, $sql) = @_;
	my ($out, $err) = ('', '');
	my $rc = $node->psql(
		'postgres', $sql,
		connstr => $node->connstr('postgres') . " user=$user",
		stdout => \$out,
		stderr => \$err);
	return ($rc, $out, $err);
}

foreach my $guc ('processor.redis_password', 'processor.redis_password_file')
{
	my ($rc, $out, $err) = psql_as('alice', "SHOW $guc");
	isnt($rc, 0, "(d) alice cannot SHOW $guc");
	like($err,
		qr/must be superuser or have privileges of pg_read_all_settings to examine "\Q$guc\E"/,
		"(d) SHOW $guc: PostgreSQL's permission error");
	is(leaked($out . $err), '', "(d) nothing of the password in the error");

	($rc, $out, $err) = psql_as('alice', "SELECT current_setting('$guc')");
	isnt($rc, 0, "(d) alice cannot read $guc with current_setting()");
}
my ($rc, $out, $err) = psql_as('alice', q{
	SELECT count(*) FROM pg_settings
	 WHERE name IN ('processor.redis_password', 'processor.redis_password_file')
	    OR setting LIKE '%pw140%'});
is("$rc|$out", '0|0', '(d) alice finds neither setting in pg_settings');

($rc, $out, $err) = psql_as('bob', 'SHOW processor.redis_password');
is("$rc|$out", "0|$guc_password",
	'(d) a pg_read_all_settings member can SHOW processor.redis_password (why the file is recommended)'
);
($rc, $out, $err) = psql_as('bob', 'SHOW processor.redis_password_file');
is("$rc|$out", "0|$pwfile",
	'(d) ... while the file setting shows only the file name');

# --- No password anywhere in the server log.

my $log = slurp_file($node->logfile);
is(leaked($log), '', 'no password (right, wrong, ACL or GUC) in any line of the server log');
unlike($log, qr/terminated by signal/, 'the server never crashed');

$node->stop;
$redis->stop;

done_testing();
