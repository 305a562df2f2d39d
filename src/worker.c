/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The processor background worker: startup, the consume loop, batches,
 *	  backoff, and recovery from errors.
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
#include "common/hashfn.h"
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
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/ps_status.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "processor.h"

/* How often a worker waiting for CREATE EXTENSION or paused looks again. */
#define WAIT_POLL_MS		1000

/* Longest wait for an XACK reply, while interrupts are held. */
#define ACK_TIMEOUT_MS		1000

/* Invalid entries parked (dead_letter = off) that we keep fresh, at most. */
#define PARKED_MAX			10000

/* A batch read from Redis, kept until its outcome is acknowledged. */
typedef struct Batch
{
	bool		present;
	bool		decoded;
	bool		committed;		/* committed, XACK still owed */
	char	   *stream;			/* where it was read from */
	char	   *group;
	StreamEntry *entries;
	int			nentries;
	Position   *positions;
	const char **position_ids;
	const StreamEntry **position_entries;	/* the entry of each position */
	int			npositions;
	DeadLetter *dead;
	int			ndead;
	char	  **ack_ids;		/* ids whose outcome the commit holds */
	int			nack;
	WriteResult result;
	TimestampTz touched_at;		/* read or last XCLAIM ... JUSTID */
} Batch;

/* Everything one worker remembers between steps. */
typedef struct Worker
{
	int			number;
	MemoryContext batch_cxt;	/* the batch; reset once it is acknowledged */
	Batch		batch;

	RedisConn  *redis;
	bool		in_redis;		/* a Redis command is under way */
	char	   *redis_key;		/* settings the connection was made with */
	bool		group_ready;
	bool		group_from_zero;	/* re-create the group at 0 (NOGROUP) */
	bool		history;		/* reading our own pending entries */
	char		cursor[STREAM_ID_BUFLEN];

	/* what we consume; changes only when a switch has drained the old */
	char	   *stream;
	char	   *group;
	char	   *consumer;
	bool		switch_pending;

	bool		extension_ok;
	bool		extension_hinted;
	bool		tables_ready;
	bool		announced_ready;
	bool		ever_connected;	/* a later connect is a reconnect */
	int			read_count;		/* COUNT of new reads; halved on oversize */
	bool		oversized_pending;	/* history's next entry is too large */
	char		claim_cursor[STREAM_ID_BUFLEN];	/* XAUTOCLAIM scan position */
	TimestampTz last_claim;		/* when the last claim scan ended */
	HTAB	   *parked;			/* ids of invalid entries left pending */
	TimestampTz parked_touched_at;
	TimestampTz last_group_poll;	/* last XINFO for lag and pending */
	int			backoff_ms;
	char		last_error[256];
} Worker;

static Worker worker;

static void park_entry(Worker *w, const StreamEntry *e, const char *error);
static void forget_parked(Worker *w);
static void keep_ownership(Worker *w);
static long touch_interval_ms(void);

/* ----------------------------------------------------------------
 * Small helpers: waiting, backoff, names
 * ----------------------------------------------------------------
 */

/*
 * Sleep up to ms on our latch; SIGTERM, SIGHUP and postmaster death cut it
 * short.  The caller's loop serves the reason.
 */
static void
wait_ms(long ms)
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
static void
backoff_wait(Worker *w)
{
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													w->backoff_ms);

	stats_set_status(WORKER_STATUS_BACKOFF);
	for (;;)
	{
		long		ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
														 until);

		if (ms <= 0 || ConfigReloadPending)
			break;
		if (processor_claim_min_idle > 0 && (w->batch.present || w->parked))
			ms = Min(ms, touch_interval_ms());
		wait_ms(ms);
		keep_ownership(w);
	}
}

/*
 * One failed step: log the reason and wait out the next backoff delay.
 */
static void
fail_and_backoff(Worker *w, const char *msg)
{
	advance_backoff(w);
	note_failure(w, msg);
	backoff_wait(w);
}

/*
 * Consumer name: processor.consumer_name, or "<host name>:<port>", suffixed
 * "-N" with the worker number, so that it survives restarts.
 */
static char *
make_consumer_name(int number)
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
static void
set_top_string(char **dst, const char *src)
{
	if (*dst)
		pfree(*dst);
	*dst = MemoryContextStrdup(TopMemoryContext, src);
}

/* ----------------------------------------------------------------
 * Redis connection
 * ----------------------------------------------------------------
 */

/*
 * Read the password: processor.redis_password_file wins over
 * processor.redis_password.  Returns NULL with *error set when the file
 * cannot be read.  The password never appears in a message.
 */
static char *
read_password(char **error)
{
	FILE	   *f;
	char		buf[1024];
	size_t		len;

	if (processor_redis_password_file[0] == '\0')
		return pstrdup(processor_redis_password);

	f = AllocateFile(processor_redis_password_file, "r");
	if (f == NULL)
	{
		*error = psprintf("could not open processor.redis_password_file \"%s\": %m",
						  processor_redis_password_file);
		return NULL;
	}
	len = fread(buf, 1, sizeof(buf) - 1, f);
	FreeFile(f);
	buf[len] = '\0';
	/* a trailing newline is not part of the password */
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		buf[--len] = '\0';
	return pstrdup(buf);
}

/*
 * A string identifying the Redis settings, to tell after a reload whether
 * the connection must be remade.  Holds no secret, only the password file
 * name and whether a password is set.
 */
static char *
redis_settings_key(void)
{
	return psprintf("%s|%d|%s|%d|%s|%u",
					processor_redis_host, processor_redis_port,
					processor_redis_user, processor_redis_db,
					processor_redis_password_file,
					(unsigned) hash_bytes((const unsigned char *) processor_redis_password,
										  strlen(processor_redis_password)));
}

/*
 * Drop the Redis connection; the next step reconnects and re-reads history.
 */
static void
disconnect_redis(Worker *w)
{
	if (w->redis)
		redis_disconnect(w->redis);
	w->redis = NULL;
	stats_set_redis_connected(false);
	w->in_redis = false;
	w->group_ready = false;
}

/*
 * Connect to Redis if we are not connected.  Returns false after a failed
 * attempt (already logged and waited out).
 */
static bool
connect_redis(Worker *w)
{
	char	   *error = NULL;
	char	   *password;

	if (w->redis)
		return true;

	stats_set_status(WORKER_STATUS_CONNECTING);
	password = read_password(&error);
	if (password != NULL)
	{
		w->in_redis = true;
		w->redis = redis_connect(processor_redis_host, processor_redis_port,
								 processor_redis_user, password,
								 processor_redis_db,
								 processor_redis_connect_timeout,
								 processor_redis_timeout, &error);
		w->in_redis = false;
		memset(password, 0, strlen(password));
	}
	if (w->redis == NULL)
	{
		/* a reload cut the attempt short: serve it and try again at once */
		if (!ConfigReloadPending)
			fail_and_backoff(w, error ? error : "could not connect to Redis");
		return false;
	}

	redis_set_max_reply_bytes(w->redis, processor_max_reply_bytes);
	w->read_count = processor_batch_size;
	strlcpy(w->claim_cursor, "0-0", sizeof(w->claim_cursor));
	set_top_string(&w->redis_key, redis_settings_key());
	stats_set_redis_connected(true);
	if (w->ever_connected)
		stats_add_reconnect();
	w->ever_connected = true;
	w->history = true;
	strlcpy(w->cursor, "0", sizeof(w->cursor));
	ereport(LOG,
			(errmsg("connected to Redis %s:%d",
					processor_redis_host, processor_redis_port)));
	return true;
}

/*
 * Create the consumer group if needed (BUSYGROUP counts as success).
 */
static bool
ensure_group(Worker *w)
{
	const char *start = w->group_from_zero ? "0" : processor_group_start_id;
	RedisResult rc;

	if (w->group_ready)
		return true;

	w->in_redis = true;
	rc = redis_ensure_group(w->redis, w->stream, w->group, start);
	w->in_redis = false;
	if (rc != REDIS_OK)
	{
		char	   *msg = psprintf("could not create consumer group \"%s\" on \"%s\": %s",
								   w->group, w->stream,
								   redis_last_error(w->redis));

		if (rc != REDIS_ERROR_REPLY)
			disconnect_redis(w);
		fail_and_backoff(w, msg);
		return false;
	}

	w->group_ready = true;
	w->group_from_zero = false;
	w->history = true;
	strlcpy(w->cursor, "0", sizeof(w->cursor));
	ereport(LOG,
			(errmsg("consumer group \"%s\" on \"%s\" ready (consumer \"%s\")",
					w->group, w->stream, w->consumer)));
	if (!w->announced_ready)
	{
		ereport(LOG, (errmsg("processor ready")));
		w->announced_ready = true;
	}
	return true;
}

/*
 * Connected, and the group exists.
 */
static bool
ensure_redis(Worker *w)
{
	return connect_redis(w) && ensure_group(w);
}

/*
 * React to a Redis failure of a stream command: NOGROUP re-creates the
 * group at 0; anything else drops the connection and backs off.
 */
static void
redis_failed(Worker *w, RedisResult rc, const char *what)
{
	char	   *msg = psprintf("%s failed: %s", what, redis_last_error(w->redis));

	if (rc == REDIS_NOGROUP)
	{
		ereport(LOG,
				(errmsg("consumer group \"%s\" on \"%s\" is gone; re-creating it at 0",
						w->group, w->stream)));
		w->group_ready = false;
		w->group_from_zero = true;
		return;
	}
	if (rc == REDIS_INTERRUPTED)
	{
		/* a reload arrived during a blocked read: reconnect after it */
		disconnect_redis(w);
		return;
	}
	if (rc != REDIS_ERROR_REPLY)
		disconnect_redis(w);
	fail_and_backoff(w, msg);
}

/* ----------------------------------------------------------------
 * Stream, group and consumer switch after a reload
 * ----------------------------------------------------------------
 */

/*
 * Start consuming what the settings now name.  Called once the old
 * consumer's pending entries are drained, or when that failed.
 */
static void
apply_switch(Worker *w)
{
	char	   *consumer = make_consumer_name(w->number);

	set_top_string(&w->stream, processor_stream);
	set_top_string(&w->group, processor_group);
	set_top_string(&w->consumer, consumer);
	stats_set_consumer(consumer);
	w->switch_pending = false;
	w->group_ready = false;
	forget_parked(w);
	w->history = true;
	strlcpy(w->cursor, "0", sizeof(w->cursor));
}

/*
 * Reread the configuration (SIGHUP).  Changed Redis settings reconnect;
 * a changed stream, group or consumer first drains this consumer's pending
 * entries on the old one (best effort), then switches.
 */
static void
reload_config(Worker *w)
{
	char	   *consumer;

	ConfigReloadPending = false;
	ProcessConfigFile(PGC_SIGHUP);

	if (w->redis && strcmp(w->redis_key, redis_settings_key()) != 0)
	{
		ereport(LOG, (errmsg("processor worker %d: Redis settings changed, reconnecting",
							 w->number)));
		disconnect_redis(w);
	}

	consumer = make_consumer_name(w->number);
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
			apply_switch(w);
	}

	/* dead letters on again: history hands the parked entries over */
	if (processor_dead_letter && w->parked)
	{
		forget_parked(w);
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
static void
begin_work(const char *activity)
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
static void
commit_work(void)
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
static bool
extension_installed(void)
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
		found = extension_installed();
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
	wait_ms(WAIT_POLL_MS);
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
	bool		ok;

	if (w->tables_ready)
		return true;

	begin_work("processor: checking tables");
	ok = tables_ensure(&problem);
	commit_work();

	if (!ok)
	{
		fail_and_backoff(w, problem);
		return false;
	}
	w->tables_ready = true;
	return true;
}

/*
 * If the effective synchronous_commit is off, raise it to local for this
 * transaction only, so the commit is flushed before we XACK.  SET LOCAL
 * semantics: re-evaluated for every batch, stronger settings untouched.
 */
static void
ensure_durable_commit(void)
{
	if (synchronous_commit == SYNCHRONOUS_COMMIT_OFF)
		(void) set_config_option("synchronous_commit", "local",
								 PGC_SUSET, PGC_S_SESSION,
								 GUC_ACTION_LOCAL, true, 0, false);
}

/* ----------------------------------------------------------------
 * Batches
 * ----------------------------------------------------------------
 */

/*
 * Has a redelivered entry used up processor.max_deliveries?  Counts are
 * known only for entries read from history or claimed (SPEC §4).
 */
static bool
too_many_deliveries(const StreamEntry *e)
{
	return e->deliveries > processor_max_deliveries;
}

static char *
delivery_error(const StreamEntry *e)
{
	return psprintf("delivered " INT64_FORMAT " times (max %d)",
					e->deliveries, processor_max_deliveries);
}

/*
 * Decode every entry of the batch into positions and dead letters, and
 * list the ids to acknowledge once the batch commits.  Done once per batch,
 * outside the transaction: decoding needs no catalog access.
 */
static void
decode_batch(Worker *w, Batch *b)
{
	int			i;

	b->positions = palloc(sizeof(Position) * Max(b->nentries, 1));
	b->position_ids = palloc(sizeof(char *) * Max(b->nentries, 1));
	b->position_entries = palloc(sizeof(StreamEntry *) * Max(b->nentries, 1));
	b->dead = palloc(sizeof(DeadLetter) * Max(b->nentries, 1));
	b->ack_ids = palloc(sizeof(char *) * Max(b->nentries, 1));
	b->npositions = b->ndead = b->nack = 0;

	for (i = 0; i < b->nentries; i++)
	{
		StreamEntry *e = &b->entries[i];
		char	   *error = NULL;

		if (e->nfields < 0)
			error = pstrdup(e->error ? e->error : "entry no longer in stream");
		else if (too_many_deliveries(e) && processor_dead_letter)
			error = delivery_error(e);
		else if (codec_decode_entry(e, processor_max_entry_bytes,
									&b->positions[b->npositions], &error))
		{
			/* with dead_letter off, only a valid entry is dead-lettered */
			if (too_many_deliveries(e))
				error = delivery_error(e);
			else
			{
				b->position_entries[b->npositions] = e;
				b->position_ids[b->npositions++] = e->id;
				b->ack_ids[b->nack++] = e->id;
				continue;
			}
		}

		if (processor_dead_letter || e->nfields < 0 || too_many_deliveries(e))
		{
			b->dead[b->ndead].entry = e;
			b->dead[b->ndead].error = error;
			b->dead[b->ndead].deliveries = e->deliveries;
			b->ndead++;
			b->ack_ids[b->nack++] = e->id;
		}
		else
			park_entry(w, e, error);
	}
	b->decoded = true;
}

/*
 * Forget the batch in memory.
 */
static void
drop_batch(Worker *w)
{
	MemoryContextReset(w->batch_cxt);
	memset(&w->batch, 0, sizeof(Batch));
}

/*
 * Send XACK for the committed batch and wait for the reply.  On success (or
 * NOGROUP: the pending list went with the group) the batch is forgotten.
 * Does not back off: the caller may be holding interrupts.  A failure
 * leaves the batch owed; it is acknowledged after the reconnect, or its
 * entries come back as duplicates: nothing is lost either way.
 */
static RedisResult
send_ack(Worker *w)
{
	Batch	   *b = &w->batch;
	RedisResult rc = REDIS_OK;
	int64		acked = 0;

	if (b->nack > 0)
	{
		/*
		 * Interrupts may be held (from COMMIT): give the reply at most a
		 * second (SPEC §3); a late one only means redeliveries.
		 */
		int			timeout = redis_set_reply_timeout(w->redis,
													  Min(processor_redis_timeout,
														  ACK_TIMEOUT_MS));

		w->in_redis = true;
		rc = redis_ack(w->redis, b->stream, b->group, b->ack_ids, b->nack,
					   &acked);
		w->in_redis = false;
		redis_set_reply_timeout(w->redis, timeout);
	}
	if (rc != REDIS_OK && rc != REDIS_NOGROUP)
		return rc;

	elog(DEBUG1, "batch read=%d inserted=" INT64_FORMAT " duplicates=" INT64_FORMAT " dead_lettered=" INT64_FORMAT,
		 b->nentries, b->result.inserted, b->result.duplicates,
		 b->result.dead_lettered);
	drop_batch(w);
	w->backoff_ms = 0;
	return rc;
}

/*
 * Acknowledge the committed batch, handling a failure (which may back off).
 */
static void
ack_batch(Worker *w)
{
	RedisResult rc = send_ack(w);

	if (rc != REDIS_OK)
		redis_failed(w, rc, "XACK");
}

/*
 * Run the batch's transaction: insert, dead-letter, commit.  Returns false
 * without writing anything when the extension has gone (DROP EXTENSION).
 * Any database error is raised to worker_loop, which backs off; the batch
 * stays in memory for the retry.
 */
static bool
commit_batch(Worker *w, Batch *b)
{
	begin_work("processor: inserting batch");
	if (!extension_installed())
	{
		commit_work();
		w->extension_ok = false;
		return false;
	}
	ensure_durable_commit();
	writer_insert_batch(b->positions, b->position_entries, b->npositions,
						b->dead, b->ndead, b->stream, &b->result);
	SPI_finish();
	PopActiveSnapshot();

	/*
	 * From COMMIT to the XACK reply, hold interrupts: a SIGTERM here would
	 * leave a committed batch pending, to come back as duplicates.
	 */
	HOLD_INTERRUPTS();
	CommitTransactionCommand();
	MemoryContextSwitchTo(work_caller_cxt);
	b->committed = true;
	stats_add_batch(&b->result);
	return true;
}

/*
 * Process the batch in memory: decode once, commit, acknowledge.
 */
static void
process_batch(Worker *w)
{
	Batch	   *b = &w->batch;
	MemoryContext old;
	RedisResult rc;

	old = MemoryContextSwitchTo(w->batch_cxt);
	if (!b->decoded)
	{
		decode_batch(w, b);
		/* once per batch: a retry from memory is not a new position */
		state_update_batch(b->positions, b->npositions);
	}
	MemoryContextSwitchTo(old);

	if (b->npositions == 0 && b->ndead == 0)
	{
		/* only parked invalid entries: nothing to commit or acknowledge */
		drop_batch(w);
		return;
	}

	if (!commit_batch(w, b))
		return;

	/* interrupts are held since COMMIT; the ACK goes out first */
	rc = send_ack(w);
	RESUME_INTERRUPTS();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	if (rc != REDIS_OK)
		redis_failed(w, rc, "XACK");
}

/* ----------------------------------------------------------------
 * Reading: new entries, history, claims, oversized replies
 * ----------------------------------------------------------------
 */

/*
 * Make entries (palloc'd in batch_cxt) the batch in memory.
 */
static void
set_batch(Worker *w, StreamEntry *entries, int n)
{
	Batch	   *b = &w->batch;

	b->present = true;
	b->entries = entries;
	b->nentries = n;
	b->stream = MemoryContextStrdup(w->batch_cxt, w->stream);
	b->group = MemoryContextStrdup(w->batch_cxt, w->group);
	b->touched_at = GetCurrentTimestamp();
}

/*
 * A reply was larger than processor.max_reply_bytes and the connection is
 * gone.  New reads halve their COUNT; in history (COUNT 1 already) the
 * entry itself is too large and is dead-lettered by id after the
 * reconnect.
 */
static void
reply_too_large(Worker *w)
{
	if (w->history)
		w->oversized_pending = true;
	else
		w->read_count = Max(w->read_count / 2, 1);
	disconnect_redis(w);
	fail_and_backoff(w, psprintf("reply larger than processor.max_reply_bytes (%d bytes); reading %d entries at a time",
								 processor_max_reply_bytes,
								 w->history ? 1 : w->read_count));
}

/*
 * XREADGROUP into batch_cxt.  Returns false after a failure (handled).
 */
static bool
read_entries(Worker *w, int count, int block_ms, const char *start,
			 StreamEntry **entries, int *n)
{
	MemoryContext old;
	RedisResult rc;

	old = MemoryContextSwitchTo(w->batch_cxt);
	w->in_redis = true;
	rc = redis_read_group(w->redis, w->stream, w->group, w->consumer,
						  count, block_ms, start, entries, n);
	while (rc == REDIS_INTERRUPTED)
	{
		/*
		 * A reload during BLOCK: serve it now (SPEC §3: within 100 ms),
		 * then collect the reply unless the reload dropped the connection.
		 */
		MemoryContextSwitchTo(old);
		reload_config(w);
		if (w->redis != NULL && w->switch_pending)
		{
			/* do not sit out a BLOCK on a stream we are leaving */
			disconnect_redis(w);
		}
		if (w->redis == NULL)
		{
			drop_batch(w);
			return false;
		}
		MemoryContextSwitchTo(w->batch_cxt);
		rc = redis_read_group_resume(w->redis, entries, n);
	}
	w->in_redis = false;
	MemoryContextSwitchTo(old);

	if (rc == REDIS_OK)
	{
		stats_add_read(*n);
		return true;
	}
	drop_batch(w);
	if (rc == REDIS_REPLY_TOO_LARGE)
		reply_too_large(w);
	else
	{
		if (w->switch_pending)
			apply_switch(w);	/* draining the old stream is best effort */
		redis_failed(w, rc, "XREADGROUP");
	}
	return false;
}

/*
 * Fetch delivery counts for entries read from history or claimed.
 * Returns false after a failure (handled; the batch is dropped, and its
 * entries come back from history).
 */
static bool
fetch_delivery_counts(Worker *w, StreamEntry *entries, int n)
{
	MemoryContext old;
	RedisResult rc;

	old = MemoryContextSwitchTo(w->batch_cxt);
	w->in_redis = true;
	rc = stream_delivery_counts(w->redis, w->stream, w->group, w->consumer,
								entries, n);
	w->in_redis = false;
	MemoryContextSwitchTo(old);
	if (rc == REDIS_OK)
		return true;
	drop_batch(w);
	redis_failed(w, rc, "XPENDING");
	return false;
}

/*
 * Read this consumer's next pending entry.  One at a time: every entry
 * here has been delivered before (SPEC §4, poison by crash), so each gets a
 * transaction of its own and cannot take batch-mates down with it.
 */
static void
read_history(Worker *w)
{
	StreamEntry *entries;
	int			n;

	if (!read_entries(w, 1, -1, w->cursor, &entries, &n))
		return;
	if (n == 0)
	{
		w->history = false;
		return;
	}
	strlcpy(w->cursor, entries[n - 1].id, sizeof(w->cursor));
	if (fetch_delivery_counts(w, entries, n))
		set_batch(w, entries, n);
}

/*
 * The history's next entry cannot be read within processor.max_reply_bytes:
 * dead-letter it by id, without its fields.
 */
static void
take_oversized(Worker *w)
{
	StreamEntry *e;
	char	   *id = NULL;
	RedisResult rc;
	MemoryContext old = MemoryContextSwitchTo(w->batch_cxt);

	w->in_redis = true;
	rc = stream_first_pending(w->redis, w->stream, w->group, w->consumer,
							  w->cursor, &id);
	w->in_redis = false;
	MemoryContextSwitchTo(old);
	if (rc != REDIS_OK)
	{
		drop_batch(w);
		redis_failed(w, rc, "XPENDING");
		return;
	}
	w->oversized_pending = false;
	if (id == NULL)
		return;

	e = MemoryContextAllocZero(w->batch_cxt, sizeof(StreamEntry));
	e->id = id;
	e->nfields = -1;
	e->error = MemoryContextStrdup(w->batch_cxt,
								   psprintf("entry larger than processor.max_reply_bytes (%d bytes)",
											processor_max_reply_bytes));
	strlcpy(w->cursor, id, sizeof(w->cursor));
	if (fetch_delivery_counts(w, e, 1))
		set_batch(w, e, 1);
}

/*
 * Is a claim scan due?  One runs every processor.claim_interval and goes
 * on, step by step, until XAUTOCLAIM's cursor comes back to 0-0.
 */
static bool
claim_due(Worker *w)
{
	if (processor_claim_min_idle <= 0)
		return false;
	if (strcmp(w->claim_cursor, "0-0") != 0)
		return true;
	return TimestampDifferenceExceeds(w->last_claim, GetCurrentTimestamp(),
									  processor_claim_interval);
}

/*
 * Claim one entry idle for longer than processor.claim_min_idle from any
 * consumer of the group (a vanished one, typically), plus the ids Redis
 * found deleted on the way, which become "entry no longer in stream" dead
 * letters.  Claimed entries have been delivered before: one at a time.
 */
static void
claim_batch(Worker *w)
{
	StreamEntry *entries;
	StreamEntry *all;
	char	  **deleted;
	int			n;
	int			ndeleted;
	int			i;
	RedisResult rc;
	MemoryContext old = MemoryContextSwitchTo(w->batch_cxt);

	w->in_redis = true;
	rc = stream_autoclaim(w->redis, w->stream, w->group, w->consumer,
						  processor_claim_min_idle, w->claim_cursor, 1,
						  &entries, &n, &deleted, &ndeleted);
	w->in_redis = false;
	if (rc == REDIS_OK && strcmp(w->claim_cursor, "0-0") == 0)
		w->last_claim = GetCurrentTimestamp();
	if (rc != REDIS_OK || n + ndeleted == 0)
	{
		MemoryContextSwitchTo(old);
		drop_batch(w);
		strlcpy(w->claim_cursor, "0-0", sizeof(w->claim_cursor));
		if (rc != REDIS_OK)
			redis_failed(w, rc, "XAUTOCLAIM");
		return;
	}

	all = palloc0(sizeof(StreamEntry) * (n + ndeleted));
	memcpy(all, entries, sizeof(StreamEntry) * n);
	for (i = 0; i < ndeleted; i++)
	{
		all[n + i].id = deleted[i];
		all[n + i].nfields = -1;
	}
	MemoryContextSwitchTo(old);

	stats_add_read(n + ndeleted);
	stats_add_claimed(n + ndeleted);
	ereport(DEBUG1,
			(errmsg("processor worker %d claimed %d idle entries", w->number,
					n + ndeleted)));
	if (fetch_delivery_counts(w, all, n))
		set_batch(w, all, n + ndeleted);
}

/*
 * Read new entries (">"), blocking up to processor.block_time.
 */
static void
read_new(Worker *w)
{
	StreamEntry *entries;
	int			n;

	if (w->read_count <= 0 || w->read_count > processor_batch_size)
		w->read_count = processor_batch_size;
	if (!read_entries(w, w->read_count, processor_block_time, ">",
					  &entries, &n))
		return;
	w->backoff_ms = 0;
	/* after an oversized reply, grow back */
	w->read_count = Min(w->read_count * 2, processor_batch_size);
	if (n > 0)
		set_batch(w, entries, n);
}

/*
 * Read the next batch: this consumer's history first (after every
 * (re)connect), then claims when due, then new entries.
 */
static void
read_batch(Worker *w)
{
	if (!w->history && w->switch_pending)
		apply_switch(w);
	else if (w->oversized_pending)
		take_oversized(w);
	else if (w->history)
		read_history(w);
	else if (claim_due(w))
		claim_batch(w);
	else
		read_new(w);
}

/* ----------------------------------------------------------------
 * Ownership: held batches and parked entries stay ours
 * ----------------------------------------------------------------
 */

/* How often entries we hold are touched: well within claim_min_idle. */
static long
touch_interval_ms(void)
{
	return Max(processor_claim_min_idle / 2, 1);
}

/*
 * Remember an invalid entry left pending (processor.dead_letter = off), so
 * that it is kept fresh and neither we nor another consumer claim it.
 */
static void
park_entry(Worker *w, const StreamEntry *e, const char *error)
{
	ereport(LOG,
			(errmsg("processor worker %d: invalid entry %s left pending: %s",
					w->number, e->id, error)));
	if (w->parked == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = STREAM_ID_BUFLEN;
		ctl.entrysize = STREAM_ID_BUFLEN;
		ctl.hcxt = TopMemoryContext;
		w->parked = hash_create("processor parked entries", 256, &ctl,
								HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}
	if (hash_get_num_entries(w->parked) < PARKED_MAX)
		(void) hash_search(w->parked, e->id, HASH_ENTER, NULL);
}

/*
 * Forget the parked entries (the stream changed, or dead letters are on
 * again and history will take them).
 */
static void
forget_parked(Worker *w)
{
	if (w->parked)
		hash_destroy(w->parked);
	w->parked = NULL;
}

/*
 * XCLAIM ... JUSTID a list of ids; failures are handled like any Redis
 * failure.
 */
static void
touch_ids(Worker *w, const char *stream, const char *group, char **ids, int n)
{
	RedisResult rc;

	w->in_redis = true;
	rc = stream_touch(w->redis, stream, group, w->consumer, ids, n);
	w->in_redis = false;
	if (rc != REDIS_OK)
		redis_failed(w, rc, "XCLAIM");
}

/*
 * Keep what we hold from reaching processor.claim_min_idle: a batch that
 * waits (for a retry, the extension, or a resume) and the parked entries.
 * XCLAIM ... JUSTID does not raise delivery counts, so an outage of any
 * length costs no deliveries (SPEC §4).
 */
static void
keep_ownership(Worker *w)
{
	Batch	   *b = &w->batch;
	TimestampTz now = GetCurrentTimestamp();
	long		interval = touch_interval_ms();

	if (processor_claim_min_idle <= 0 || w->redis == NULL)
		return;

	if (b->present && !b->committed &&
		TimestampDifferenceExceeds(b->touched_at, now, interval))
	{
		char	  **ids = palloc(sizeof(char *) * b->nentries);
		int			i;

		for (i = 0; i < b->nentries; i++)
			ids[i] = b->entries[i].id;
		b->touched_at = now;
		touch_ids(w, b->stream, b->group, ids, b->nentries);
	}

	if (w->parked && w->redis &&
		TimestampDifferenceExceeds(w->parked_touched_at, now, interval))
	{
		HASH_SEQ_STATUS seq;
		char	   *id;
		char	  **ids = palloc(sizeof(char *) * hash_get_num_entries(w->parked));
		int			n = 0;

		hash_seq_init(&seq, w->parked);
		while ((id = hash_seq_search(&seq)) != NULL)
			ids[n++] = id;
		w->parked_touched_at = now;
		touch_ids(w, w->stream, w->group, ids, n);
	}
}

/* ----------------------------------------------------------------
 * Group figures for processor.stats(): lag and pending
 * ----------------------------------------------------------------
 */

/* How often the group's lag and pending counts are asked for. */
#define GROUP_POLL_MS		1000

/*
 * Ask Redis for the group's lag and pending counts, at most once a second,
 * and publish them.  A failure only leaves the figures as they were; a
 * broken connection is dropped.
 */
static void
poll_group_info(Worker *w)
{
	int64		lag;
	int64		group_pending;
	int64		pending;
	RedisResult rc;
	TimestampTz now = GetCurrentTimestamp();

	if (!TimestampDifferenceExceeds(w->last_group_poll, now, GROUP_POLL_MS))
		return;
	w->last_group_poll = now;

	w->in_redis = true;
	rc = stream_group_info(w->redis, w->stream, w->group, w->consumer,
						   &lag, &group_pending, &pending);
	w->in_redis = false;
	if (rc == REDIS_OK)
		stats_set_group_info(lag >= 0, Max(lag, 0), pending, group_pending);
	else if (rc != REDIS_ERROR_REPLY && rc != REDIS_NOGROUP)
		redis_failed(w, rc, "XINFO");
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
		reload_config(w);

	/* a committed batch is acknowledged before anything else happens */
	if (w->batch.committed)
	{
		if (ensure_redis(w))
			ack_batch(w);
		return;
	}

	if (!processor_enabled)
	{
		stats_set_status(WORKER_STATUS_PAUSED);
		wait_ms(WAIT_POLL_MS);
		return;
	}
	if (!check_extension(w) || !check_tables(w) || !ensure_redis(w))
		return;
	stats_set_status(WORKER_STATUS_RUNNING);
	poll_group_info(w);
	keep_ownership(w);
	if (w->redis == NULL)
		return;

	if (!w->batch.present)
		read_batch(w);
	else
		process_batch(w);
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
	AbortCurrentTransaction();
	FlushErrorState();
	MemoryContextSwitchTo(loop_cxt);

	strlcpy(w->last_error, edata->message ? edata->message : "unknown error",
			sizeof(w->last_error));
	FreeErrorData(edata);
	stats_set_error(w->last_error);
	if (w->batch.decoded && !w->batch.committed)
		stats_add_db_retry();

	if (w->in_redis)
		disconnect_redis(w);
	/* the tables may be what failed; look at them again */
	w->tables_ready = false;
	pgstat_report_activity(STATE_IDLE, NULL);
	RESUME_INTERRUPTS();

	advance_backoff(w);
	backoff_wait(w);
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

	w->batch_cxt = AllocSetContextCreate(TopMemoryContext, "processor batch",
										 ALLOCSET_DEFAULT_SIZES);
	set_top_string(&w->redis_key, "");
	apply_switch(w);

	worker_loop(w);
}
