/*-------------------------------------------------------------------------
 *
 * batch.c
 *	  A batch's life in the worker: decode once, update the device state,
 *	  one transaction for its rows and dead letters, COMMIT, then XACK
 *	  exactly the ids whose outcome the commit holds (SPEC §4).
 *
 * The batch lives in the worker's batch context until it is acknowledged:
 * a transaction that fails leaves it in memory to be retried as is, so an
 * outage neither re-reads it from Redis nor raises delivery counts.
 * Interrupts are held from COMMIT to the XACK reply (at most a second), so
 * that a SIGTERM cannot leave a committed batch unacknowledged in between.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "access/xact.h"
#include "libpq/pqsignal.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "replication/syncrep.h"
#include "replication/walsender.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "worker_internal.h"

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
 * Decode one entry in the worker's scratch context and keep only the
 * result (in the caller's context, the batch's): parsing leaves several
 * kilobytes of lexer and builder state per entry, which would otherwise
 * pile up in the batch context and be handed back to the kernel after
 * every batch, costing page faults on the next.
 */
static bool
decode_entry(Worker *w, const StreamEntry *e, Position *pos, char **error)
{
	MemoryContext batch_cxt = CurrentMemoryContext;
	Position	tmp;
	bool		ok;

	MemoryContextSwitchTo(w->decode_cxt);
	ok = codec_decode_entry(e, processor_max_entry_bytes, &tmp, error);
	MemoryContextSwitchTo(batch_cxt);

	if (ok)
	{
		*pos = tmp;
		pos->device_id = pstrdup(tmp.device_id);
		pos->attributes = palloc(VARSIZE(tmp.attributes));
		memcpy(pos->attributes, tmp.attributes, VARSIZE(tmp.attributes));
	}
	else
		*error = pstrdup(*error);
	MemoryContextReset(w->decode_cxt);
	return ok;
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
	b->position_entries = palloc(sizeof(StreamEntry *) * Max(b->nentries, 1));
	b->dead = palloc(sizeof(DeadLetter) * Max(b->nentries, 1));
	b->ack_ids = palloc(sizeof(char *) * Max(b->nentries, 1));
	b->npositions = b->ndead = b->nack = 0;

	for (i = 0; i < b->nentries; i++)
	{
		StreamEntry *e = &b->entries[i];
		char	   *error = NULL;
		bool		valid = false;

		if (e->nfields < 0)
			error = pstrdup(e->error ? e->error : "entry no longer in stream");
		else if (too_many_deliveries(e) && processor_dead_letter)
			error = delivery_error(e);
		else if ((valid = decode_entry(w, e, &b->positions[b->npositions],
									   &error)))
		{
			/*
			 * With dead_letter off, max_deliveries dead-letters only a valid
			 * entry (a poison one); an invalid entry stays parked however
			 * often history re-reads it (SPEC §4).
			 */
			if (too_many_deliveries(e))
				error = delivery_error(e);
			else
			{
				b->position_entries[b->npositions++] = e;
				b->ack_ids[b->nack++] = e->id;
				continue;
			}
		}

		if (processor_dead_letter || e->nfields < 0 || valid)
		{
			b->dead[b->ndead].entry = e;
			b->dead[b->ndead].error = error;
			b->dead[b->ndead].deliveries = e->deliveries;
			b->ndead++;
			b->ack_ids[b->nack++] = e->id;
		}
		else
			session_park_entry(w, e, error);
	}
	b->decoded = true;
}

/*
 * Forget the batch in memory.
 */
void
batch_drop(Worker *w)
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
send_ack(Worker *w, bool interrupts_held)
{
	Batch	   *b = &w->batch;
	RedisResult rc = REDIS_OK;
	int64		acked = 0;

	if (b->nack > 0)
	{
		w->in_redis = true;
		rc = redis_ack(w->redis, b->stream, b->group, b->ack_ids, b->nack,
					   interrupts_held ? ACK_TIMEOUT_MS : -1, &acked);
		if (rc == REDIS_INTERRUPTED)
		{
			/*
			 * Interrupts are held from COMMIT for at most a second (SPEC
			 * §3): let a pending SIGTERM in, then wait on for the reply as
			 * for any command.  Dying here leaves the batch committed and
			 * pending, to come back as duplicates.
			 */
			RESUME_INTERRUPTS();
			CHECK_FOR_INTERRUPTS();
			rc = redis_ack_resume(w->redis, &acked);
			HOLD_INTERRUPTS();	/* the caller resumes */
		}
		w->in_redis = false;
	}
	if (rc != REDIS_OK && rc != REDIS_NOGROUP)
		return rc;

	elog(DEBUG1, "batch read=%d inserted=" INT64_FORMAT " duplicates=" INT64_FORMAT " dead_lettered=" INT64_FORMAT,
		 b->nentries, b->result.inserted, b->result.duplicates,
		 b->result.dead_lettered);
	batch_drop(w);
	w->backoff_ms = 0;
	return rc;
}

/*
 * Acknowledge the committed batch, handling a failure (which may back off).
 */
void
batch_ack(Worker *w)
{
	RedisResult rc = send_ack(w, false);

	if (rc != REDIS_OK)
		session_failed(w, rc, "XACK");
}

/*
 * COMMIT the batch's transaction (interrupts held) and say whether its
 * outcome may be acknowledged.
 *
 * With a synchronous standby wanted, PostgreSQL stops waiting for it on a
 * query cancel or a SIGTERM, with only a WARNING, and the commit returns
 * as if it had completed: the rows may be on this server only.  So a
 * cancel (SIGINT) is ignored while we commit, and after a SIGTERM the batch
 * is left unacknowledged (pending, it comes back as duplicates).
 */
static bool
commit_and_check(void)
{
	bool		sync_wait = SyncRepRequested();
	pqsigfunc	old_sigint = pqsignal(SIGINT, SIG_IGN);

	CommitTransactionCommand();
	pqsignal(SIGINT, old_sigint);
	return !(sync_wait && ProcDiePending);
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
	MemoryContext caller = CurrentMemoryContext;

	worker_begin_work("processor: inserting batch");
	if (!worker_extension_installed())
	{
		worker_commit_work();
		w->extension_ok = false;
		return false;
	}
	ensure_durable_commit();

	/*
	 * A transaction id of our own, so that the commit writes, flushes and
	 * (with a synchronous standby) replicates a commit record even when the
	 * batch inserts nothing (all duplicates, dead letters already stored):
	 * its XACK then vouches for rows that someone else committed, perhaps
	 * asynchronously, and our flush covers theirs.
	 */
	(void) GetTopTransactionId();
	writer_insert_batch(b->positions, b->position_entries, b->npositions,
						b->dead, b->ndead, b->stream, &b->result);
	SPI_finish();
	PopActiveSnapshot();

	/*
	 * From COMMIT to the XACK reply, hold interrupts: a SIGTERM here would
	 * leave a committed batch pending, to come back as duplicates.
	 */
	HOLD_INTERRUPTS();
	b->ack_safe = commit_and_check();
	MemoryContextSwitchTo(caller);
	b->committed = true;
	stats_add_batch(&b->result);
	return true;
}

/*
 * Process the batch in memory: decode once, commit, acknowledge.
 */
void
batch_process(Worker *w)
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
		batch_drop(w);
		return;
	}

	if (!commit_batch(w, b))
		return;

	if (!b->ack_safe)
	{
		/* a SIGTERM cut the standby wait short: exit, acknowledging nothing */
		RESUME_INTERRUPTS();
		CHECK_FOR_INTERRUPTS();
	}

	/* interrupts are held since COMMIT; the ACK goes out first */
	rc = send_ack(w, true);
	RESUME_INTERRUPTS();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	if (rc != REDIS_OK)
		session_failed(w, rc, "XACK");
}
