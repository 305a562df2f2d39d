/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The processor background worker: startup, the consume loop,
 *	  configuration reloads, backoff, and recovery from errors.  The Redis
 *	  side is in session.c, a batch's life in batch.c (worker_internal.h).
 *
 * One step of the loop does one thing and returns: acknowledge a committed
 * batch, wait for the extension, check the tables, (re)connect to Redis,
 * read a batch, or process the batch in memory.  A failed step backs off
 * (processor.retry_min doubling up to processor.retry_max) and the loop tries
 * again; nothing in here exits on a failure that time can cure.
 *
 * Delivery rules kept here (SPEC §4):
 *	- a batch is committed in one transaction, and only then are exactly the
 *	  ids whose outcome it holds acknowledged (XACK), before the next read;
 *	- the commit is durable before XACK: synchronous_commit is raised to
 *	  local for our transactions when it is off;
 *	- a batch whose transaction fails stays in memory and is retried as is,
 *	  so an outage does not re-read it from Redis;
 *	- after every (re)connect, this consumer's own pending entries are read
 *	  first (history), then new ones.
 *
 * Errors: an ERROR anywhere in a step lands in the sigsetjmp block of
 * worker_loop, which rolls back, logs, and backs off.  No hiredis memory is
 * held across anything that can raise an ERROR (redis.c copies replies into
 * palloc'd memory), so recovery frees nothing by hand except the connection
 * when the ERROR struck in the middle of a Redis command.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <unistd.h>

#include "access/xact.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "libpq/pqsignal.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "postmaster/postmaster.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "worker_internal.h"

/* Keeper block of the batch context (see processor_worker_main). */
#define BATCH_KEEPER_BYTES	(4 * 1024 * 1024)

/* How often a worker waiting for CREATE EXTENSION or paused looks again. */
#define WAIT_POLL_MS		1000

static Worker worker;

/* ----------------------------------------------------------------
 * Small helpers: waiting, backoff, names
 * ----------------------------------------------------------------
 */

/*
 * Sleep up to ms on our latch; SIGTERM, SIGHUP and postmaster death cut it
 * short.  The caller's loop serves the reason.
 */
void
worker_wait_ms(long ms)
{
	int			rc;

	rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
				   ms, PG_WAIT_EXTENSION);
	if (rc & WL_LATCH_SET)
		ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

/*
 * Remember a failure and log it once; each call is one backoff step, so the
 * log gets at most one line per step.
 */
static void
note_failure(Worker *w, const char *msg)
{
	strlcpy(w->last_error, msg, sizeof(w->last_error));
	stats_set_error(msg);
	ereport(LOG,
			(errmsg("processor worker %d: %s", w->number, msg),
			 w->backoff_ms > 0 ?
			 errdetail("Retrying in %d ms.", w->backoff_ms) : 0));
}

/*
 * Compute the next backoff delay: processor.retry_min, doubling up to
 * processor.retry_max.
 */
static void
advance_backoff(Worker *w)
{
	if (w->backoff_ms <= 0)
		w->backoff_ms = processor_retry_min;
	else
		w->backoff_ms = Min((int64) w->backoff_ms * 2, (int64) processor_retry_max);
	w->backoff_ms = Max(Min(w->backoff_ms, processor_retry_max), 1);
}

/*
 * Wait out the current backoff delay.  While we hold entries, wake up in
 * time to keep them ours (keep_ownership) even if the delay is longer.
 */
void
worker_backoff_wait(Worker *w)
{
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													w->backoff_ms);

	stats_set_status(WORKER_STATUS_BACKOFF);
	for (;;)
	{
		long		ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
														 until);

		long		touch = session_ms_until_touch(w);

		if (ms <= 0 || ConfigReloadPending)
			break;
		if (touch >= 0)
			ms = Min(ms, Max(touch, 1));
		worker_wait_ms(ms);
		session_keep_ownership(w);
	}
}

/*
 * One failed step: log the reason and wait out the next backoff delay.
 */
void
worker_fail(Worker *w, const char *msg)
{
	advance_backoff(w);
	note_failure(w, msg);
	worker_backoff_wait(w);
}

/*
 * Consumer name: processor.consumer_name, or "<host name>:<port>", suffixed
 * "-N" with the worker number, so that it survives restarts.
 */
char *
worker_consumer_name(int number)
{
	char		host[256];

	if (processor_consumer_name[0] != '\0')
		return psprintf("%s-%d", processor_consumer_name, number);
	if (gethostname(host, sizeof(host)) != 0)
		strlcpy(host, "localhost", sizeof(host));
	host[sizeof(host) - 1] = '\0';
	return psprintf("%s:%d-%d", host, PostPortNumber, number);
}

/*
 * Copy a string into TopMemoryContext, freeing the old copy.
 */
void
worker_set_string(char **dst, const char *src)
{
	if (*dst)
		pfree(*dst);
	*dst = MemoryContextStrdup(TopMemoryContext, src);
}

/* ----------------------------------------------------------------
 * Configuration reload
 * ----------------------------------------------------------------
 */

/*
 * Reread the configuration (SIGHUP).  Changed Redis settings reconnect;
 * a changed stream, group or consumer first drains this consumer's pending
 * entries on the old one (best effort), then switches.
 */
void
worker_reload_config(Worker *w)
{
	char	   *consumer;

	ConfigReloadPending = false;
	ProcessConfigFile(PGC_SIGHUP);

	if (w->redis && strcmp(w->redis_key, session_settings_key()) != 0)
	{
		ereport(LOG, (errmsg("processor worker %d: Redis settings changed, reconnecting",
							 w->number)));
		session_disconnect(w);
	}
	else if (w->redis)
	{
		/* limits apply to the live connection as they are */
		redis_set_reply_timeout(w->redis, processor_redis_timeout);
		redis_set_max_reply_bytes(w->redis, processor_max_reply_bytes);
	}

	consumer = worker_consumer_name(w->number);
	if (strcmp(w->stream, processor_stream) != 0 ||
		strcmp(w->group, processor_group) != 0 ||
		strcmp(w->consumer, consumer) != 0)
	{
		ereport(LOG,
				(errmsg("processor worker %d: switching from \"%s\" to \"%s\" after draining pending entries",
						w->number, w->stream, processor_stream)));
		w->switch_pending = true;
		w->history = true;
		strlcpy(w->cursor, "0", sizeof(w->cursor));
		if (w->redis == NULL)
			session_apply_switch(w);
	}

	/* dead letters on again: history hands the parked entries over */
	if (processor_dead_letter && w->parked)
	{
		session_forget_parked(w);
		w->history = true;
		strlcpy(w->cursor, "0", sizeof(w->cursor));
	}

	/* the table GUCs may name other tables now; the spec re-checks anyway */
	w->tables_ready = false;
}

/* ----------------------------------------------------------------
 * Database side: extension, tables, batch transaction
 * ----------------------------------------------------------------
 */

/* The memory context to return to after our transaction commits. */
static MemoryContext work_caller_cxt = NULL;

/*
 * Open a transaction for our work, with SPI and a snapshot.
 */
void
worker_begin_work(const char *activity)
{
	work_caller_cxt = CurrentMemoryContext;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

/*
 * Close and commit the transaction opened by begin_work.
 */
void
worker_commit_work(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	/* commit leaves us in TopMemoryContext */
	MemoryContextSwitchTo(work_caller_cxt);
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * Is the extension installed in our database?  A syscache lookup, so it
 * takes no lock that could block DROP EXTENSION.  Caller: in a transaction.
 */
bool
worker_extension_installed(void)
{
	return OidIsValid(get_extension_oid(PROCESSOR_EXTENSION_NAME, true));
}

/*
 * Wait (one poll) for CREATE EXTENSION processor.  Returns true once it
 * exists.
 */
static bool
check_extension(Worker *w)
{
	bool		found;

	if (w->extension_ok)
		return true;

	{
		MemoryContext caller = CurrentMemoryContext;

		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		found = worker_extension_installed();
		CommitTransactionCommand();
		MemoryContextSwitchTo(caller);
	}

	if (found)
	{
		w->extension_ok = true;
		w->extension_hinted = false;
		w->tables_ready = false;
		return true;
	}
	if (!w->extension_hinted)
	{
		ereport(LOG,
				(errmsg("processor worker %d is waiting for the extension in database \"%s\"",
						w->number, processor_database),
				 errhint("Run CREATE EXTENSION processor in database \"%s\".",
						 processor_database)));
		w->extension_hinted = true;
	}
	stats_set_status(WORKER_STATUS_WAITING_FOR_EXTENSION);
	worker_wait_ms(WAIT_POLL_MS);
	return false;
}

/*
 * Create or validate the tables.  Returns false (after backing off) when
 * they cannot be used.
 */
static bool
check_tables(Worker *w)
{
	char	   *problem = NULL;
	char		message[256];
	bool		ok;

	if (w->tables_ready)
		return true;

	worker_begin_work("processor: checking tables");
	ok = tables_ensure(&problem);
	/* the message lives in SPI's memory, which worker_commit_work frees */
	if (!ok)
		strlcpy(message, problem, sizeof(message));
	worker_commit_work();

	if (!ok)
	{
		worker_fail(w, message);
		return false;
	}
	w->tables_ready = true;
	return true;
}

/* ----------------------------------------------------------------
 * The loop
 * ----------------------------------------------------------------
 */

/*
 * One step of the loop (see the file header).
 */
static void
worker_step(Worker *w)
{
	if (ConfigReloadPending)
		worker_reload_config(w);

	/* a committed batch is acknowledged before anything else happens */
	if (w->batch.committed)
	{
		if (session_ensure(w))
			batch_ack(w);
		return;
	}

	if (!processor_enabled)
	{
		stats_set_status(WORKER_STATUS_PAUSED);
		worker_wait_ms(WAIT_POLL_MS);
		return;
	}
	if (!check_extension(w) || !check_tables(w) || !session_ensure(w))
		return;
	stats_set_status(WORKER_STATUS_RUNNING);
	session_poll_group_info(w);
	session_keep_ownership(w);
	if (w->redis == NULL)
		return;

	if (!w->batch.present)
		session_read_batch(w);
	else
		batch_process(w);
}

/*
 * Recover from an ERROR raised during a step: report it, roll back, drop a
 * Redis connection caught mid-command, and back off.  The batch in memory
 * survives for the retry.
 */
static void
recover_from_error(Worker *w, MemoryContext loop_cxt)
{
	ErrorData  *edata;

	/* not using PG_TRY: the context callbacks of the failed code are gone */
	error_context_stack = NULL;

	HOLD_INTERRUPTS();
	EmitErrorReport();
	LWLockReleaseAll();
	MemoryContextSwitchTo(loop_cxt);
	edata = CopyErrorData();
	/* out of every level: the writer may have been in a subtransaction */
	AbortOutOfAnyTransaction();
	FlushErrorState();
	MemoryContextSwitchTo(loop_cxt);

	strlcpy(w->last_error, edata->message ? edata->message : "unknown error",
			sizeof(w->last_error));
	FreeErrorData(edata);
	stats_set_error(w->last_error);
	if (w->batch.decoded && !w->batch.committed)
		stats_add_db_retry();

	if (w->in_redis)
		session_disconnect(w);
	/* the tables may be what failed; look at them again */
	w->tables_ready = false;
	pgstat_report_activity(STATE_IDLE, NULL);
	RESUME_INTERRUPTS();

	advance_backoff(w);
	worker_backoff_wait(w);
}

/*
 * Run steps forever.  Errors come back here through sigsetjmp.
 */
static void
worker_loop(Worker *w)
{
	sigjmp_buf	local_sigjmp_buf;
	MemoryContext loop_cxt;

	loop_cxt = AllocSetContextCreate(TopMemoryContext, "processor loop",
									 ALLOCSET_DEFAULT_SIZES);

	if (sigsetjmp(local_sigjmp_buf, 1) != 0)
		recover_from_error(w, loop_cxt);
	PG_exception_stack = &local_sigjmp_buf;

	for (;;)
	{
		MemoryContextSwitchTo(loop_cxt);
		MemoryContextReset(loop_cxt);
		CHECK_FOR_INTERRUPTS();
		worker_step(w);
	}
}

/*
 * Refuse a database whose encoding is not UTF8.  Exit code 0 unregisters
 * the worker: restarting could not help before the server is reconfigured
 * (processor.database needs a restart anyway).
 */
static void
check_encoding(int number)
{
	if (GetDatabaseEncoding() == PG_UTF8)
		return;
	ereport(LOG,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("processor worker %d cannot run in database \"%s\" with encoding \"%s\"",
					number, processor_database, GetDatabaseEncodingName()),
			 errdetail("processor requires a database with UTF8 encoding."),
			 errhint("Set processor.database to a UTF8 database and restart the server.")));
	proc_exit(0);
}

/*
 * Entry point of a processor background worker; main_arg is its number.
 */
void
processor_worker_main(Datum main_arg)
{
	Worker	   *w = &worker;

	memset(w, 0, sizeof(*w));
	w->number = DatumGetInt32(main_arg);

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	stats_worker_attach(w->number);

	ereport(LOG, (errmsg("processor worker %d starting", w->number)));

	BackgroundWorkerInitializeConnection(processor_database,
										 processor_role[0] ? processor_role : NULL,
										 0);
	check_encoding(w->number);

	/* every name we use is qualified; nothing may be resolved elsewhere */
	SetConfigOption("search_path", "pg_catalog, pg_temp",
					PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * The batch context keeps a keeper block as large as a typical batch:
	 * resetting it then hands nothing back to malloc, and the next batch
	 * touches no fresh pages (page faults were most of the worker's CPU).
	 * Untouched pages of the block cost no memory.
	 */
	w->batch_cxt = AllocSetContextCreate(TopMemoryContext, "processor batch",
										 BATCH_KEEPER_BYTES,
										 BATCH_KEEPER_BYTES,
										 ALLOCSET_DEFAULT_MAXSIZE);
	/* big enough a keeper block that resetting it per entry frees nothing */
	w->decode_cxt = AllocSetContextCreate(TopMemoryContext, "processor decode",
										  64 * 1024, 64 * 1024,
										  ALLOCSET_DEFAULT_MAXSIZE);
	worker_set_string(&w->redis_key, "");
	session_apply_switch(w);

	worker_loop(w);
}
