# 195_prometheus_exporter.pl: the monitoring files work with the real tools.
#
# - Debian's prometheus-postgres-exporter, started with
#   monitoring/postgres_exporter_queries.yaml against a live node whose
#   worker has stored positions, duplicates and dead letters, serves every
#   processor metric on /metrics with the value that processor.stats() and
#   processor.state_info() give (counters, gauges, the one-hot status, the
#   worker and consumer labels), without a scrape error; after more entries
#   the next scrape follows.  promtool check metrics finds nothing to
#   complain about in those metrics.
# - promtool check rules accepts monitoring/alerts.yaml, and promtool test
#   rules shows that its main alerts fire on the situations they describe
#   (worker in backoff, Redis disconnected, lag growing, dead letters, no
#   metrics) and stay quiet for a healthy worker.

use strict;
use warnings;

use HTTP::Tiny;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use RedisServer;
use ProcessorTest;

my $srcdir = $ENV{TESTDIR} or die "TESTDIR is not set (run through make tapcheck)";
my $queries = "$srcdir/monitoring/postgres_exporter_queries.yaml";
my $alerts = "$srcdir/monitoring/alerts.yaml";
my $exporter_bin = '/usr/bin/prometheus-postgres-exporter';
my $promtool = '/usr/bin/promtool';

# scripts/install-deps.sh installs both: a missing one is a failure.
BAIL_OUT("$exporter_bin is not installed (Debian: prometheus-postgres-exporter)")
  unless -x $exporter_bin;
BAIL_OUT("$promtool is not installed (Debian: prometheus)")
  unless -x $promtool;

# The exporter, stopped by its pid at the end, or here if the test dies.
my $exporter;
END { $exporter->kill_kill if $exporter && $exporter->pumpable; }

# --- a node that has stored something ----------------------------------------

my $redis = RedisServer->new;
my $node = new_node('exporter', redis => $redis);
$node->safe_psql('postgres', 'CREATE EXTENSION processor');
ok(wait_for_rows($node, 'SELECT status FROM processor.stats()', 'running'),
	'worker running');

# $n positions of device $device from second $from on, in the flat encoding,
# each sent twice (the second copy is a duplicate), plus $invalid entries
# with lat out of range.
sub publish
{
	my (%o) = @_;
	my @cmds;
	foreach my $i (0 .. $o{n} - 1)
	{
		my @entry = (
			'XADD', 'telemetry:t', '*',
			device_id => $o{device},
			ts => 1767225600000 + 1000 * ($o{from} + $i),
			lat => 52 + $i / 1000,
			lon => 4.9);
		push @cmds, [@entry], [@entry];
	}
	push @cmds, [ 'XADD', 'telemetry:t', '*', device_id => 'bad', ts => 1,
		lat => 91.5, lon => 0 ]
	  foreach 1 .. $o{invalid};
	$redis->pipeline(@cmds);
}

publish(device => 'dev-a', from => 0, n => 20, invalid => 2);
publish(device => 'dev-b', from => 0, n => 10, invalid => 1);
ok(wait_for_rows($node, 'SELECT count(*) FROM public.positions', '30'),
	'30 positions stored');
ok(wait_for_rows($node, 'SELECT inserted, duplicates, dead_lettered, pending FROM processor.stats()',
		'30|30|3|0'),
	'30 inserted, 30 duplicates, 3 dead letters, nothing pending');

# --- the exporter ----------------------------------------------------------------

my $port = PostgreSQL::Test::Cluster::get_free_port();
my $user = $node->safe_psql('postgres', 'SELECT current_user');
my $exporter_log = "$PostgreSQL::Test::Utils::log_path/195_prometheus_exporter_exporter.log";
$exporter = IPC::Run::start(
	[
		$exporter_bin,
		"--extend.query-path=$queries",
		"--web.listen-address=127.0.0.1:$port",
	],
	'<', \undef, '>', $exporter_log, '2>&1',
	init => sub {
		$ENV{DATA_SOURCE_NAME} = join(' ',
			'host=' . $node->host, 'port=' . $node->port,
			"user=$user", 'dbname=postgres', 'sslmode=disable');
	});
my $http = HTTP::Tiny->new(timeout => 10);

# Scrape /metrics; returns { 'name{label="v",...}' => value } of the
# processor metrics and the exporter's scrape-error gauge, labels sorted,
# the exporter's own "server" label left out.  undef while not serving.
sub scrape
{
	my $res = $http->get("http://127.0.0.1:$port/metrics");
	return undef unless $res->{success};
	my %m;
	foreach my $line (split /\n/, $res->{content})
	{
		next
		  unless $line =~ /^((?:processor_|pg_exporter_last_scrape_error)\w*)(?:\{([^}]*)\})?\s+(\S+)$/;
		my ($name, $labels, $value) = ($1, $2 // '', $3);
		my @labels = sort grep { !/^server=/ } ($labels =~ /(\w+="[^"]*")/g);
		$m{ @labels ? "$name\{" . join(',', @labels) . '}' : $name } = $value;
	}
	return \%m;
}

my $metrics;
ok( poll_until(
		sub {
			$metrics = scrape();
			return $metrics && grep { /^processor_worker_up\{/ } keys %$metrics;
		}),
	'the exporter serves the processor metrics on /metrics')
  or diag "exporter log:\n" . slurp_file($exporter_log);
is($metrics->{pg_exporter_last_scrape_error}, 0, 'without a scrape error');

# The key scrape() uses for metric $name with %labels.
sub key
{
	my ($name, %labels) = @_;
	return $name unless %labels;
	return "$name\{"
	  . join(',', map { "$_=\"$labels{$_}\"" } sort keys %labels) . '}';
}

# Compare every metric with the SQL functions, read right after the scrape
# (nothing is published meanwhile, so the counters stand still).  Returns
# the worker's labels.
sub check_metrics
{
	my ($m, $what) = @_;
	my @counters = qw(entries_read inserted duplicates dead_lettered batches
	  db_retries redis_reconnects claimed);
	my @gauges = qw(lag pending group_pending);
	my ($worker, $consumer, $status, $pid, $connected, @vals) = split /\|/,
	  $node->safe_psql(
		'postgres',
		'SELECT worker, consumer, status, pid IS NOT NULL, redis_connected::int, '
		  . join(', ', @counters, @gauges)
		  . ' FROM processor.stats()');
	my %l = (worker => $worker, consumer => $consumer);
	my %expected = (
		key('processor_worker_up', %l) => $pid eq 't' ? 1 : 0,
		key('processor_worker_running', %l) => $status eq 'running' ? 1 : 0,
		key('processor_worker_redis_connected', %l) => $connected);
	$expected{ key("processor_worker_${_}_total", %l) } = shift @vals
	  foreach @counters;
	$expected{ key("processor_worker_$_", %l) } = shift @vals foreach @gauges;
	$expected{ key('processor_worker_status', %l, status => $_) } =
	  $_ eq $status ? 1 : 0
	  foreach qw(waiting_for_extension connecting running backoff paused stopped);

	my ($devices, $capacity, $evicted) = split /\|/,
	  $node->safe_psql('postgres', 'SELECT * FROM processor.state_info()');
	$expected{processor_state_devices} = $devices;
	$expected{processor_state_capacity} = $capacity;
	$expected{processor_state_evicted_total} = $evicted;

	my %got =
	  map { $_ => (exists $m->{$_} ? $m->{$_} + 0 : 'missing') } keys %expected;
	is_deeply(\%got, \%expected,
		"$what: every metric matches processor.stats() and state_info()")
	  or diag explain { got => \%got, expected => \%expected };
	return %l;
}

my %l = check_metrics($metrics, 'first scrape');
is($metrics->{ key('processor_worker_inserted_total', %l) },
	30, 'inserted_total is 30');
is($metrics->{ key('processor_worker_duplicates_total', %l) },
	30, 'duplicates_total is 30');
is($metrics->{ key('processor_worker_dead_lettered_total', %l) },
	3, 'dead_lettered_total is 3');
is($metrics->{ key('processor_worker_status', %l, status => 'running') },
	1, 'status "running" is 1');
is($metrics->{processor_state_devices}, 2, 'state_devices is 2');
my $age = $metrics->{ key('processor_worker_last_batch_age_seconds', %l) };
ok(defined $age && $age >= 0 && $age < 120,
	'last_batch_age_seconds is recent (' . ($age // 'missing') . ')');
cmp_ok($metrics->{ key('processor_worker_stats_reset_timestamp_seconds', %l) } // 0,
	'>', 1.7e9, 'stats_reset_timestamp_seconds is a Unix time');

# More entries: the next scrape follows.
publish(device => 'dev-c', from => 0, n => 15, invalid => 2);
ok(wait_for_rows($node, 'SELECT inserted, dead_lettered, pending FROM processor.stats()',
		'45|5|0'),
	'15 more positions and 2 more dead letters stored');
$metrics = scrape();
check_metrics($metrics, 'second scrape');
is($metrics->{ key('processor_worker_inserted_total', %l) },
	45, 'inserted_total is now 45');
is($metrics->{processor_state_devices}, 3, 'state_devices is now 3');

# Lint the processor metrics as Prometheus would see them.
{
	my $res = $http->get("http://127.0.0.1:$port/metrics");
	my $text = join("\n",
		grep { /^(# (HELP|TYPE) )?processor_/ } split /\n/, $res->{content}) . "\n";
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run([ $promtool, 'check', 'metrics' ],
		'<', \$text, '>', \$out, '2>', \$err);
	ok($ok && $out eq '' && $err eq '', 'promtool check metrics: no complaint')
	  or diag "$out$err";
}

$exporter->signal('TERM');
$exporter->finish;

# --- the alert rules ---------------------------------------------------------------

{
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run([ $promtool, 'check', 'rules', $alerts ],
		'<', \undef, '>', \$out, '2>', \$err);
	ok($ok, 'promtool check rules monitoring/alerts.yaml exits 0')
	  or diag "$out$err";
	like($out, qr/SUCCESS: \d+ rules found/, 'promtool found the rules');
}

# Unit tests of the main alerts (promtool test rules): one worker per
# situation, series sampled every minute.
my $testdir = PostgreSQL::Test::Utils::tempdir('promtool');
my $l = 'instance="db1:9187", server="db1:5432", consumer="db1:5432-1"';
my $unit = <<"EOF";
rule_files:
  - $alerts
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # worker 1: healthy
      - series: 'processor_worker_up{$l, worker="1"}'
        values: '1x20'
      - series: 'processor_worker_status{$l, worker="1", status="running"}'
        values: '1x20'
      - series: 'processor_worker_status{$l, worker="1", status="backoff"}'
        values: '0x20'
      - series: 'processor_worker_redis_connected{$l, worker="1"}'
        values: '1x20'
      - series: 'processor_worker_lag{$l, worker="1"}'
        values: '0x20'
      - series: 'processor_worker_dead_lettered_total{$l, worker="1"}'
        values: '0x20'
      # worker 2: in backoff from the start, Redis gone, lag growing
      - series: 'processor_worker_up{$l, worker="2"}'
        values: '1x20'
      - series: 'processor_worker_status{$l, worker="2", status="running"}'
        values: '0x20'
      - series: 'processor_worker_status{$l, worker="2", status="backoff"}'
        values: '1x20'
      - series: 'processor_worker_redis_connected{$l, worker="2"}'
        values: '0x20'
      - series: 'processor_worker_lag{$l, worker="2"}'
        values: '2000+500x20'
      # worker 3: producers send 3 invalid entries a minute from minute 11
      - series: 'processor_worker_dead_lettered_total{$l, worker="3"}'
        values: '0x10 3+3x10'
    alert_rule_test:
      - eval_time: 4m
        alertname: ProcessorWorkerNotRunning
        exp_alerts: []
      - eval_time: 10m
        alertname: ProcessorWorkerNotRunning
        exp_alerts:
          - exp_labels: {severity: critical, instance: "db1:9187", server: "db1:5432", consumer: "db1:5432-1", worker: "2", status: backoff}
            exp_annotations:
              summary: "processor worker 2 on db1:5432 is backoff"
              description: "Worker 2 (consumer db1:5432-1) has been in status backoff for 5 minutes and stores nothing; positions wait in Redis.  See last_error in processor.worker_stats and the server log."
      - eval_time: 10m
        alertname: ProcessorRedisDisconnected
        exp_alerts:
          - exp_labels: {severity: critical, instance: "db1:9187", server: "db1:5432", consumer: "db1:5432-1", worker: "2"}
            exp_annotations:
              summary: "processor worker 2 on db1:5432 is not connected to Redis"
              description: "No connection to Redis for 2 minutes; the worker keeps retrying (processor.retry_min .. processor.retry_max).  Check Redis, the network, processor.redis_host/port and the Redis password."
      - eval_time: 15m
        alertname: ProcessorLagGrowing
        exp_alerts:
          - exp_labels: {severity: warning, instance: "db1:9187", server: "db1:5432", consumer: "db1:5432-1", worker: "2"}
            exp_annotations:
              summary: "processor lag on db1:5432 is growing (9.5k entries)"
              description: "The consumer group falls behind the producers.  Look at the insert rate (rate(processor_worker_inserted_total[5m])), the database's load, locks on the target table, and consider processor.batch_size or processor.workers."
      - eval_time: 5m
        alertname: ProcessorDeadLetters
        exp_alerts: []
      - eval_time: 15m
        alertname: ProcessorDeadLetters
        exp_alerts:
          - exp_labels: {severity: warning, instance: "db1:9187", server: "db1:5432", consumer: "db1:5432-1", worker: "3"}
            exp_annotations:
              summary: "15 invalid entries dead-lettered on db1:5432 in 10 minutes"
              description: "SELECT stream_id, error, fields FROM public.positions_dead_letter ORDER BY failed_at DESC shows what the producers sent and why it was refused.  After a fix, processor.replay_dead_letters() stores the entries that are now valid."
      - eval_time: 15m
        alertname: ProcessorMetricsMissing
        exp_alerts: []
  - interval: 1m
    input_series:
      - series: 'up{job="postgres"}'
        values: '1x20'
    alert_rule_test:
      - eval_time: 15m
        alertname: ProcessorMetricsMissing
        exp_alerts:
          - exp_labels: {severity: warning}
            exp_annotations:
              summary: "No processor metrics from postgres_exporter"
              description: "processor_worker_up has been absent for 10 minutes.  Check that the exporter connects to processor.database, that its role has pg_monitor, and pg_exporter_last_scrape_error."
EOF
PostgreSQL::Test::Utils::append_to_file("$testdir/alerts_test.yaml", $unit);
{
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run([ $promtool, 'test', 'rules', "$testdir/alerts_test.yaml" ],
		'<', \undef, '>', \$out, '2>', \$err);
	ok($ok, 'promtool test rules: the alerts fire when they should, and only then')
	  or diag "$out$err";
}

$node->stop;
$redis->stop;

done_testing();
