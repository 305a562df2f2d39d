/*-------------------------------------------------------------------------
 *
 * writer_internal.h
 *	  What writer.c (the SPI statements, the owner's rights, the column
 *	  values) offers writer_isolation.c (the positions' subtransactions).
 *	  Nothing here is for the other modules: they use processor.h.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WRITER_INTERNAL_H
#define WRITER_INTERNAL_H

#include "executor/spi.h"

#include "processor.h"

/* Columns of the target's statements. */
#define TARGET_NCOLS		11

/* Rows of the VALUES statements: 500 x 11 parameters. */
#define VALUES_ROWS			500
#define VALUES_NARGS		(VALUES_ROWS * TARGET_NCOLS)

/* One column's values for every row of a call. */
typedef struct ColumnBuf
{
	Datum	   *values;
	bool	   *nulls;
	int16		typlen;
	bool		typbyval;
	char		typalign;
	Oid			elemtype;
} ColumnBuf;

/*
 * The kept statement inserting positions: VALUES_ROWS rows of VALUES, or
 * unnest over arrays; with ON CONFLICT (device_id, ts) DO NOTHING or plain.
 * Prepared when there is none or processor.target_table changed.
 */
extern SPIPlanPtr writer_target_plan(bool values, bool on_conflict);

/*
 * The role to insert into the table named by guc_value as (its owner when
 * we are a superuser and it is not), or InvalidOid; becoming it and back.
 */
extern Oid	writer_insert_role(const char *guc_value);
extern int	writer_begin_as_role(Oid role, int saved_sec_context);
extern void writer_end_as_role(int guc_nest_level, Oid saved_user,
							   int saved_sec_context);

/* Every position's column values, and the parameters built from them. */
extern ColumnBuf *writer_position_columns(const Position *pos,
										  const StreamEntry *const *entries,
										  int n);
extern void writer_column_arrays(ColumnBuf *cols, int ncols, int lo, int n,
								 Datum *args);
extern void writer_values_params(ColumnBuf *cols, int lo, Datum **args,
								 char **nulls);

#endif							/* WRITER_INTERNAL_H */
