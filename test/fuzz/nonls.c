/*-------------------------------------------------------------------------
 *
 * nonls.c
 *	  Preload shim for the fuzz run: bindtextdomain() does nothing.
 *
 * With the ASan runtime preloaded, the postgres executable deadlocks at
 * start in glibc's bindtextdomain (libgpg-error's and gnutls's
 * constructors call it before ASan is initialised, which leaves glibc's
 * gettext lock held).  The fuzz run needs no translated messages, so the
 * catalogs are simply never bound.  See run.sh.
 *
 *-------------------------------------------------------------------------
 */
char	   *bindtextdomain(const char *domain, const char *dir);
char	   *bind_textdomain_codeset(const char *domain, const char *codeset);

char *
bindtextdomain(const char *domain, const char *dir)
{
	(void) domain;
	return (char *) dir;
}

char *
bind_textdomain_codeset(const char *domain, const char *codeset)
{
	(void) domain;
	return (char *) codeset;
}
