/*-------------------------------------------------------------------------
 *
 * writer_isolation.c
 *	  The positions' insert in subtransactions: a plain attempt first, then
 *	  ON CONFLICT, and row-level error isolation (SPEC §4).  The statements
 *	  themselves, and the owner's rights they run with, are writer.c's.
 *
 * Plain first.  A batch is first inserted by the same statement without
 * ON CONFLICT: speculative insertion (a probe of the unique index before
 * each row, then confirming the row) costs about a fifth of the insert, and
 * duplicates only come with redeliveries, which are rare.  If that attempt
 * fails with a row-level error (a unique violation, or anything else the
 * ON CONFLICT statement might also meet), its subtransaction is rolled back
 * and the batch goes through the ON CONFLICT statement and the isolation
 * below, exactly as if the plain attempt had never run.  A producer that
 * sends duplicates all the time would make every batch pay twice (and
 * leave the first attempt's rows as dead tuples), so after a failed plain
 * attempt the next PLAIN_PAUSE_CALLS calls go straight to ON CONFLICT.
 *
 * Row-level errors.  The positions go in through one subtransaction (the
 * fast path: one subtransaction per batch).  When it fails with a
 * row-level error, the chunk is halved and each half tried in
 * its own subtransaction, down to the single rows that fail; those come
 * back as dead letters carrying the database's errmsg, the others are
 * inserted.  An error is row-level when
 *	- its SQLSTATE is of class 22 (data exception) or 23 (integrity
 *	  constraint violation), wherever it was raised; or
 *	- it was raised while a trigger ran (pg_trigger_depth() > 0 when the
 *	  error was thrown, noted by an error context callback, so whatever the
 *	  trigger's language or SQLSTATE), unless its class says that the
 *	  environment rather than the row is at fault: 08, 25, 40, 42, 53, 54,
 *	  55, 57, 58, F0, HV, XX (lock or statement timeout, deadlock,
 *	  permission denied, missing object, out of memory, ...).
 * Every other error is batch-level and is raised at once.  So is a row-level
 * error that every position of the batch hit with the same SQLSTATE (no
 * partition for any of them, a broken trigger), unless the errors name the
 * constraint or column that the rows broke (CHECK, NOT NULL, foreign key,
 * or a trigger's RAISE ... USING CONSTRAINT/COLUMN): a row that breaks a
 * named constraint is bad data whatever its batch-mates do, and holding it
 * back would block the stream for good -- a batch of one is common.  The
 * worker rolls a batch-level error back and retries the batch later.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "nodes/parsenodes.h"
#include "miscadmin.h"
#include "utils/fmgrprotos.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "processor.h"
#include "writer_internal.h"

/* Calls that skip the plain attempt after one failed (see the header). */
#define PLAIN_PAUSE_CALLS	100

static int	plain_paused_calls = 0;

/* ----------------------------------------------------------------
 * Positions: subtransactions and row-level isolation
 * ----------------------------------------------------------------
 */

/* One statement execution of an attempt. */
typedef struct InsertStep
{
	SPIPlanPtr	plan;
	Datum	   *args;
	char	   *nulls;			/* NULL: none (the unnest arrays) */
} InsertStep;

/* One call's insert of positions, across its attempts. */
typedef struct PositionInsert
{
	ColumnBuf  *cols;			/* every position's column values */
	Oid			role;			/* run as this role, or InvalidOid */
	MemoryContext caller_cxt;	/* outlives the subtransactions */
	MemoryContext attempt_cxt;	/* one attempt's arrays; reset after it */
	int64		inserted;		/* rows actually inserted */
	int		   *failed;			/* indexes of the positions refused */
	ErrorData **errors;			/* and why, in caller_cxt */
	int			nfailed;
	bool		in_trigger;		/* the last report came from a trigger */
} PositionInsert;

/*
 * Error context callback around the INSERT: it runs when an error (or a
 * message) is thrown, before the stack unwinds, so pg_trigger_depth() still
 * tells whether a trigger was running.  The last report before the ERROR
 * is caught is the ERROR itself.
 */
static void
note_trigger_depth(void *arg)
{
	LOCAL_FCINFO(fcinfo, 0);

	InitFunctionCallInfoData(*fcinfo, NULL, 0, InvalidOid, NULL, NULL);
	*(bool *) arg = DatumGetInt32(pg_trigger_depth(fcinfo)) > 0;
}

/*
 * Is this error about the rows rather than the batch?  See the file header.
 */
static bool
is_row_level(const ErrorData *edata, bool in_trigger)
{
	int			category = ERRCODE_TO_CATEGORY(edata->sqlerrcode);

	if (category == ERRCODE_DATA_EXCEPTION ||
		category == ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION)
		return true;
	if (!in_trigger)
		return false;

	switch (category)
	{
		case ERRCODE_CONNECTION_EXCEPTION:
		case ERRCODE_INVALID_TRANSACTION_STATE:
		case ERRCODE_TRANSACTION_ROLLBACK:
		case ERRCODE_SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION:
		case ERRCODE_INSUFFICIENT_RESOURCES:
		case ERRCODE_PROGRAM_LIMIT_EXCEEDED:
		case ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE:
		case ERRCODE_OPERATOR_INTERVENTION:
		case ERRCODE_SYSTEM_ERROR:
		case ERRCODE_CONFIG_FILE_ERROR:
		case ERRCODE_FDW_ERROR:
		case ERRCODE_INTERNAL_ERROR:
			return false;
		default:
			return true;
	}
}

/*
 * The statements that insert positions lo .. lo + n - 1: a VALUES statement
 * per VALUES_ROWS rows, then unnest for the rest.  Plans are fetched (and
 * prepared if need be) here, outside the subtransaction; the parameters
 * are built in attempt_cxt.  Returns the number of steps.
 */
static int
plan_steps(PositionInsert *pi, int lo, int n, bool on_conflict,
		   InsertStep *steps)
{
	int			nsteps = 0;

	MemoryContextSwitchTo(pi->attempt_cxt);
	for (; n >= VALUES_ROWS; lo += VALUES_ROWS, n -= VALUES_ROWS)
	{
		steps[nsteps].plan = writer_target_plan(true, on_conflict);
		writer_values_params(pi->cols, lo, &steps[nsteps].args,
					  &steps[nsteps].nulls);
		nsteps++;
	}
	if (n > 0)
	{
		steps[nsteps].plan = writer_target_plan(false, on_conflict);
		steps[nsteps].args = palloc(sizeof(Datum) * TARGET_NCOLS);
		steps[nsteps].nulls = NULL;
		writer_column_arrays(pi->cols, TARGET_NCOLS, lo, n, steps[nsteps].args);
		nsteps++;
	}
	MemoryContextSwitchTo(pi->caller_cxt);
	return nsteps;
}

/*
 * Run the INSERT for positions lo .. lo + n - 1 in a subtransaction, as
 * pi->role if set: the plain statement, or the ON CONFLICT one.  Returns
 * NULL on success (pi->inserted grows), or the error of a row-level
 * failure (in caller_cxt), everything rolled back.  A batch-level error is
 * rolled back to here and raised again.
 *
 * The subtransaction handling is that of PL/pgSQL's exception blocks: come
 * back to the caller's memory context and resource owner on both paths.
 */
static ErrorData *
try_positions(PositionInsert *pi, int lo, int n, bool plain)
{
	ResourceOwner caller_owner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;
	InsertStep *steps;
	volatile int nsteps;		/* read inside PG_TRY */
	Oid			saved_user;
	int			saved_sec_context;

	steps = MemoryContextAlloc(pi->attempt_cxt,
							   sizeof(InsertStep) * (n / VALUES_ROWS + 1));
	nsteps = plan_steps(pi, lo, n, !plain, steps);

	GetUserIdAndSecContext(&saved_user, &saved_sec_context);
	pi->in_trigger = false;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(pi->caller_cxt);

	PG_TRY();
	{
		ErrorContextCallback callback;
		int			nest_level;
		uint64		processed = 0;
		int			i;

		nest_level = writer_begin_as_role(pi->role, saved_sec_context);
		callback.callback = note_trigger_depth;
		callback.arg = &pi->in_trigger;
		callback.previous = error_context_stack;
		error_context_stack = &callback;

		for (i = 0; i < nsteps; i++)
		{
			int			rc = SPI_execute_plan(steps[i].plan, steps[i].args,
											  steps[i].nulls, false, 0);

			if (rc != SPI_OK_INSERT)
				elog(ERROR, "insert into \"%s\" failed: %s",
					 processor_target_table, SPI_result_code_string(rc));
			processed += SPI_processed;
		}

		error_context_stack = callback.previous;
		writer_end_as_role(nest_level, saved_user, saved_sec_context);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(pi->caller_cxt);
		CurrentResourceOwner = caller_owner;
		pi->inserted += (int64) processed;
	}
	PG_CATCH();
	{
		SetUserIdAndSecContext(saved_user, saved_sec_context);
		MemoryContextSwitchTo(pi->caller_cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(pi->caller_cxt);
		CurrentResourceOwner = caller_owner;
	}
	PG_END_TRY();

	MemoryContextReset(pi->attempt_cxt);
	if (edata != NULL && !is_row_level(edata, pi->in_trigger))
		ReThrowError(edata);
	return edata;
}

/*
 * Insert positions lo .. lo + n - 1, halving a chunk that fails with a
 * row-level error down to the rows that fail, which are recorded in pi.
 */
static void
isolate_positions(PositionInsert *pi, int lo, int n)
{
	ErrorData  *edata;
	int			half;

	CHECK_FOR_INTERRUPTS();
	edata = try_positions(pi, lo, n, false);
	if (edata == NULL)
		return;

	if (n == 1)
	{
		pi->failed[pi->nfailed] = lo;
		pi->errors[pi->nfailed] = edata;
		pi->nfailed++;
		return;
	}

	FreeErrorData(edata);
	half = n / 2;
	isolate_positions(pi, lo, half);
	isolate_positions(pi, lo + half, n - half);
}

/*
 * Does an error name what the row broke (a constraint, a column)?
 */
static bool
names_row_fault(const ErrorData *edata)
{
	return edata->constraint_name != NULL || edata->column_name != NULL;
}

/*
 * After isolation: did all n positions fail with the same SQLSTATE, none
 * of them naming a constraint or column?  Then the error is batch-level
 * (see the file header).
 */
static bool
failures_are_batch_level(const PositionInsert *pi, int n)
{
	int			i;

	if (pi->nfailed < n)
		return false;
	for (i = 0; i < pi->nfailed; i++)
	{
		if (pi->errors[i]->sqlerrcode != pi->errors[0]->sqlerrcode ||
			names_row_fault(pi->errors[i]))
			return false;
	}
	return true;
}

/*
 * writer_insert_positions
 *		Insert positions (entries[i]->id as stream_id) with row-level error
 *		isolation; return how many rows were actually inserted.
 *
 * Positions refused by a row-level error come back in *refused (palloc'd
 * in the current memory context): one dead letter each, for entries[i],
 * with the database's message and the entry's delivery count.  The others
 * were inserted or were duplicates.  Batch-level errors are raised, with
 * nothing of this call left behind.
 *
 * Caller: inside a transaction, SPI connected, snapshot pushed.
 */
/*
 * SET CONSTRAINTS ALL IMMEDIATE for this transaction.  A deferred
 * constraint (a DEFERRABLE INITIALLY DEFERRED foreign key, a deferred
 * constraint trigger) would otherwise be checked at COMMIT, outside the
 * subtransactions that isolate a refused row: one bad row would then fail
 * its whole batch at every retry, for good.  Checked at the end of each
 * INSERT, it is a row-level error like any other.
 */
static void
check_constraints_immediately(void)
{
	ConstraintsSetStmt *stmt = makeNode(ConstraintsSetStmt);

	stmt->constraints = NIL;
	stmt->deferred = false;
	AfterTriggerSetState(stmt);
}

int64
writer_insert_positions(const Position *positions,
						const StreamEntry *const *entries, int n,
						DeadLetter **refused, int *nrefused)
{
	PositionInsert pi;
	ErrorData  *edata;
	int			i;

	*refused = NULL;
	*nrefused = 0;
	if (n <= 0)
		return 0;

	memset(&pi, 0, sizeof(pi));
	pi.caller_cxt = CurrentMemoryContext;
	pi.attempt_cxt = AllocSetContextCreate(CurrentMemoryContext,
										   "processor insert attempt",
										   ALLOCSET_DEFAULT_SIZES);
	pi.cols = writer_position_columns(positions, entries, n);
	pi.role = writer_insert_role(processor_target_table);
	pi.failed = palloc(sizeof(int) * n);
	pi.errors = palloc(sizeof(ErrorData *) * n);
	check_constraints_immediately();

	if (plain_paused_calls > 0)
	{
		plain_paused_calls--;
		isolate_positions(&pi, 0, n);
	}
	else if ((edata = try_positions(&pi, 0, n, true)) != NULL)
	{
		FreeErrorData(edata);
		plain_paused_calls = PLAIN_PAUSE_CALLS;
		isolate_positions(&pi, 0, n);
	}
	MemoryContextDelete(pi.attempt_cxt);

	if (pi.nfailed == 0)
		return pi.inserted;
	if (failures_are_batch_level(&pi, n))
		ReThrowError(pi.errors[0]);

	*refused = palloc(sizeof(DeadLetter) * pi.nfailed);
	for (i = 0; i < pi.nfailed; i++)
	{
		const StreamEntry *e = entries[pi.failed[i]];

		(*refused)[i].entry = e;
		(*refused)[i].error = pi.errors[i]->message ?
			pi.errors[i]->message : "row refused by the database";
		(*refused)[i].deliveries = e->deliveries;
		elog(DEBUG1, "entry %s refused by the database: %s",
			 e->id, (*refused)[i].error);
	}
	*nrefused = pi.nfailed;
	return pi.inserted;
}

