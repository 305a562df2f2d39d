/*-------------------------------------------------------------------------
 *
 * processor.c
 *	  Module entry point: GUC definitions and background worker registration.
 *
 * _PG_init runs in every process that loads the library.  The GUCs are
 * defined everywhere (so that processor.decode() sees processor.* settings
 * even without preloading), but workers are registered only when the library
 * is loaded through shared_preload_libraries, and never during pg_upgrade.
 *
 * Check hooks run in the postmaster on reload: they must never raise an
 * ERROR, only return false with GUC_check_errdetail.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "utils/guc.h"
#include "utils/varlena.h"

#include "processor.h"

PG_MODULE_MAGIC;

/* Restart interval of a worker that exited with code 1 (SPEC §3). */
#define PROCESSOR_RESTART_SECONDS	5

/* Postmaster GUCs */
char	   *processor_database = NULL;
char	   *processor_role = NULL;
int			processor_workers = 1;
int			processor_max_devices = 100000;

/* SIGHUP GUCs */
bool		processor_enabled = true;
char	   *processor_redis_host = NULL;
int			processor_redis_port = 6379;
char	   *processor_redis_user = NULL;
char	   *processor_redis_password = NULL;
char	   *processor_redis_password_file = NULL;
int			processor_redis_db = 0;
int			processor_redis_connect_timeout = 2000;
int			processor_redis_timeout = 30000;
char	   *processor_stream = NULL;
char	   *processor_group = NULL;
char	   *processor_consumer_name = NULL;
char	   *processor_group_start_id = NULL;
int			processor_batch_size = 1000;
int			processor_block_time = 1000;
char	   *processor_target_table = NULL;
char	   *processor_dead_letter_table = NULL;
bool		processor_dead_letter = true;
int			processor_max_entry_bytes = 1024 * 1024;
int			processor_max_reply_bytes = 64 * 1024 * 1024;
int			processor_max_deliveries = 10;
int			processor_claim_interval = 10000;
int			processor_claim_min_idle = 60000;
int			processor_retry_min = 100;
int			processor_retry_max = 30000;

void		_PG_init(void);

static void register_workers(void);

/*
 * processor_split_table_name
 *		Split "schema.table" or "table" (SQL identifier syntax, quoting
 *		allowed) into a schema and a relation name.
 *
 * An unqualified name is taken to be in "public", so that the worker, whose
 * search_path is pinned to pg_catalog, never has to resolve it.  Returns
 * false for anything that is not one or two identifiers.  Never raises an
 * ERROR: it runs in check hooks.
 */
bool
processor_split_table_name(const char *value, char **schemaname,
						   char **relname)
{
	char	   *raw;
	List	   *names = NIL;
	bool		ok;

	if (value == NULL || value[0] == '\0')
		return false;

	raw = pstrdup(value);
	ok = SplitIdentifierString(raw, '.', &names);
	if (ok && list_length(names) == 1)
	{
		*schemaname = pstrdup("public");
		*relname = pstrdup((char *) linitial(names));
	}
	else if (ok && list_length(names) == 2)
	{
		*schemaname = pstrdup((char *) linitial(names));
		*relname = pstrdup((char *) lsecond(names));
	}
	else
		ok = false;

	list_free(names);
	pfree(raw);
	return ok;
}

/*
 * Check hook of processor.target_table and processor.dead_letter_table:
 * the value must be a (possibly qualified) identifier, never SQL text.
 */
static bool
check_table_name(char **newval, void **extra, GucSource source)
{
	char	   *schemaname;
	char	   *relname;

	if (!processor_split_table_name(*newval, &schemaname, &relname))
	{
		GUC_check_errdetail("The value must be a table name, optionally schema-qualified, such as \"public.positions\".");
		return false;
	}
	pfree(schemaname);
	pfree(relname);
	return true;
}

/*
 * Check hook of processor.stream, processor.group and
 * processor.group_start_id: Redis accepts almost anything, but an empty
 * name is certainly a mistake.
 */
static bool
check_not_empty(char **newval, void **extra, GucSource source)
{
	if (*newval == NULL || (*newval)[0] == '\0')
	{
		GUC_check_errdetail("The value must not be empty.");
		return false;
	}
	return true;
}

/*
 * Check hook of processor.group_start_id: "$", "0" or a stream id
 * "<ms>[-<seq>]".  Redis would refuse anything else at XGROUP CREATE time,
 * which would leave the worker backing off forever; refuse it here instead.
 */
static bool
check_start_id(char **newval, void **extra, GucSource source)
{
	const char *p = *newval;
	bool		dash = false;

	if (p == NULL || p[0] == '\0')
	{
		GUC_check_errdetail("The value must not be empty.");
		return false;
	}
	if (strcmp(p, "$") == 0)
		return true;
	for (; *p; p++)
	{
		if (*p == '-' && !dash && p != *newval && p[1] != '\0')
			dash = true;
		else if (*p < '0' || *p > '9')
		{
			GUC_check_errdetail("The value must be \"$\" or a stream entry id such as \"0\" or \"1764151200123-0\".");
			return false;
		}
	}
	return true;
}

/*
 * Define the settings that need a server restart.
 */
static void
define_postmaster_gucs(void)
{
	DefineCustomStringVariable("processor.database",
							   "Database the processor workers connect to.",
							   NULL, &processor_database, "postgres",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("processor.role",
							   "Role the processor workers connect as (empty: the bootstrap superuser).",
							   NULL, &processor_role, "",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("processor.workers",
							"Number of processor background workers.",
							NULL, &processor_workers, 1, 0, 64,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("processor.max_devices",
							"Maximum number of devices kept in shared memory.",
							NULL, &processor_max_devices, 100000, 1, 100000000,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
}

/*
 * Define the Redis connection settings (reloadable).
 */
static void
define_redis_gucs(void)
{
	DefineCustomStringVariable("processor.redis_host",
							   "Redis server address (an IP address avoids a DNS lookup).",
							   NULL, &processor_redis_host, "127.0.0.1",
							   PGC_SIGHUP, 0, check_not_empty, NULL, NULL);
	DefineCustomIntVariable("processor.redis_port", "Redis server port.",
							NULL, &processor_redis_port, 6379, 1, 65535,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("processor.redis_user",
							   "Redis ACL user name (empty: AUTH with the password alone).",
							   NULL, &processor_redis_user, "",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("processor.redis_password",
							   "Redis password; processor.redis_password_file is preferred.",
							   NULL, &processor_redis_password, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("processor.redis_password_file",
							   "File holding the Redis password, readable by the server.",
							   NULL, &processor_redis_password_file, "",
							   PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL, NULL, NULL);
	DefineCustomIntVariable("processor.redis_db", "Redis logical database number.",
							NULL, &processor_redis_db, 0, 0, INT_MAX,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("processor.redis_connect_timeout",
							"Time allowed to connect to Redis.",
							NULL, &processor_redis_connect_timeout, 2000, 1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("processor.redis_timeout",
							"Time allowed for a Redis reply beyond processor.block_time.",
							NULL, &processor_redis_timeout, 30000, 1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
}

/*
 * Define the stream and consumer group settings (reloadable).
 */
static void
define_stream_gucs(void)
{
	DefineCustomStringVariable("processor.stream", "Redis stream key to consume.",
							   NULL, &processor_stream, "telemetry:t",
							   PGC_SIGHUP, 0, check_not_empty, NULL, NULL);
	DefineCustomStringVariable("processor.group", "Redis consumer group name.",
							   NULL, &processor_group, "processor",
							   PGC_SIGHUP, 0, check_not_empty, NULL, NULL);
	DefineCustomStringVariable("processor.consumer_name",
							   "Consumer name (empty: <host name>:<port>), suffixed with -N for worker N.",
							   NULL, &processor_consumer_name, "",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("processor.group_start_id",
							   "Stream id a newly created consumer group starts from.",
							   NULL, &processor_group_start_id, "0",
							   PGC_SIGHUP, 0, check_start_id, NULL, NULL);
	DefineCustomIntVariable("processor.batch_size",
							"Maximum entries read per XREADGROUP (COUNT).",
							NULL, &processor_batch_size, 1000, 1, 100000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("processor.block_time",
							"How long XREADGROUP waits for new entries.",
							NULL, &processor_block_time, 1000, 1, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("processor.claim_interval",
							"How often idle entries of other consumers are claimed.",
							NULL, &processor_claim_interval, 10000, 1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("processor.claim_min_idle",
							"Idle time after which a pending entry is claimed (0 disables claiming).",
							NULL, &processor_claim_min_idle, 60000, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
}

/*
 * Define the storage and failure-handling settings (reloadable).
 */
static void
define_storage_gucs(void)
{
	DefineCustomBoolVariable("processor.enabled",
							 "Whether the workers consume (off pauses them).",
							 NULL, &processor_enabled, true,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("processor.target_table",
							   "Table the positions are inserted into.",
							   NULL, &processor_target_table, "public.positions",
							   PGC_SIGHUP, 0, check_table_name, NULL, NULL);
	DefineCustomStringVariable("processor.dead_letter_table",
							   "Table invalid entries are stored in.",
							   NULL, &processor_dead_letter_table,
							   "public.positions_dead_letter",
							   PGC_SIGHUP, 0, check_table_name, NULL, NULL);
	DefineCustomBoolVariable("processor.dead_letter",
							 "Store invalid entries in the dead-letter table (off: log them and leave them pending).",
							 NULL, &processor_dead_letter, true,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("processor.max_entry_bytes",
							"Largest accepted stream entry (field and value bytes).",
							NULL, &processor_max_entry_bytes, 1024 * 1024, 64, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomIntVariable("processor.max_reply_bytes",
							"Largest accepted Redis reply.",
							NULL, &processor_max_reply_bytes, 64 * 1024 * 1024,
							1024, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomIntVariable("processor.max_deliveries",
							"Deliveries after which an entry is dead-lettered without another attempt.",
							NULL, &processor_max_deliveries, 10, 1, INT_MAX,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("processor.retry_min",
							"First backoff delay after a failure.",
							NULL, &processor_retry_min, 100, 1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("processor.retry_max",
							"Longest backoff delay after repeated failures.",
							NULL, &processor_retry_max, 30000, 1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
}

/*
 * Define every processor.* GUC and reserve the prefix, so that a misspelled
 * processor.setting in postgresql.conf is reported instead of ignored.
 */
void
processor_define_gucs(void)
{
	/*
	 * PGC_POSTMASTER variables can only be defined while preloading; a
	 * backend that loads us later (for processor.decode) has no use for
	 * them anyway.
	 */
	if (process_shared_preload_libraries_in_progress)
		define_postmaster_gucs();
	define_redis_gucs();
	define_stream_gucs();
	define_storage_gucs();
	MarkGUCPrefixReserved("processor");
}

/*
 * Register processor.workers background workers, numbered from 1.
 */
static void
register_workers(void)
{
	BackgroundWorker worker;
	int			i;

	for (i = 1; i <= processor_workers; i++)
	{
		memset(&worker, 0, sizeof(worker));
		worker.bgw_flags = BGWORKER_SHMEM_ACCESS |
			BGWORKER_BACKEND_DATABASE_CONNECTION;
		worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
		worker.bgw_restart_time = PROCESSOR_RESTART_SECONDS;
		snprintf(worker.bgw_library_name, BGW_MAXLEN, "processor");
		snprintf(worker.bgw_function_name, BGW_MAXLEN, "processor_worker_main");
		snprintf(worker.bgw_name, BGW_MAXLEN, "processor worker %d", i);
		snprintf(worker.bgw_type, BGW_MAXLEN, "processor");
		worker.bgw_main_arg = Int32GetDatum(i);
		worker.bgw_notify_pid = 0;
		RegisterBackgroundWorker(&worker);
	}
}

/*
 * Module load callback.
 */
void
_PG_init(void)
{
	processor_define_gucs();

	if (!process_shared_preload_libraries_in_progress || IsBinaryUpgrade)
		return;

	processor_shmem_install_hooks();
	register_workers();
}
