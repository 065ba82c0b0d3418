/* t_dberr — database errors by class (core/db.c): the SQLSTATE read back from a verbose connection
 * error, the class of each code, the fix named for the classes an operator must act on, DSN parsing. */
#include "db.h"
#include "tap.h"

int main(void)
{
    char code[6], err[512];
    is_int(kgx_db_message_sqlstate("connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  28P01: "
                                   "password authentication failed for user \"kgx\"", code), 0, "code found");
    is_str(code, "28P01", "after FATAL:");
    is_int(kgx_db_message_sqlstate("FATAL:  3D000: database \"x\" does not exist\nLOCATION: ...", code), 0, "at the start");
    is_str(code, "3D000", "3D000");
    is_int(kgx_db_message_sqlstate("connection to server at \"h\" failed: Connection refused", code), -1, "none without a server");
    is_str(code, "", "empty code");
    is_int(kgx_db_message_sqlstate("FATAL:  role \"x\" does not exist", code), -1, "a terse message has none");
    is_int(kgx_db_message_sqlstate(NULL, code), -1, "NULL");

    is_int(kgx_db_classify("28P01", "x"), KGX_DB_FAIL_AUTH, "28P01: authentication");
    is_int(kgx_db_classify("28000", "x"), KGX_DB_FAIL_ROLE, "28000: role");
    is_int(kgx_db_classify("3D000", "x"), KGX_DB_FAIL_DATABASE, "3D000: database");
    is_int(kgx_db_classify("58P01", "could not access file \"age\": No such file or directory"), KGX_DB_FAIL_AGE,
           "58P01 on age: AGE missing");
    is_int(kgx_db_classify("0A000", "extension \"age\" is not available"), KGX_DB_FAIL_AGE, "0A000 on age: AGE missing");
    is_int(kgx_db_classify("3F000", "schema \"ag_catalog\" does not exist"), KGX_DB_FAIL_AGE, "ag_catalog missing");
    is_int(kgx_db_classify("58P01", "could not open file \"base/1/2\""), KGX_DB_FAIL_OTHER, "58P01 elsewhere: other");
    is_int(kgx_db_classify("57P03", "the database system is starting up"), KGX_DB_FAIL_OTHER, "starting up: other");
    is_int(kgx_db_classify(NULL, "Connection refused"), KGX_DB_FAIL_OTHER, "no code: other");
    is_int(kgx_db_classify(NULL, NULL), KGX_DB_FAIL_NONE, "nothing: none");
    for (int f = KGX_DB_FAIL_AUTH; f <= KGX_DB_FAIL_AGE_CREATE; f++) {
        ok(kgx_db_fail_permanent((kgx_db_fail_t)f), "class %d is permanent", f);
        ok(*kgx_db_fail_fix((kgx_db_fail_t)f), "class %d names a fix: %s", f, kgx_db_fail_fix((kgx_db_fail_t)f));
    }
    ok(!kgx_db_fail_permanent(KGX_DB_FAIL_OTHER), "other: not permanent");
    is_str(kgx_db_fail_fix(KGX_DB_FAIL_OTHER), "", "other: no fix");

    is_int(kgx_db_dsn_check("host=localhost dbname=x", err, sizeof err), 0, "key=value DSN");
    is_int(kgx_db_dsn_check("postgresql://u@h:5432/db?sslmode=disable", err, sizeof err), 0, "URI DSN");
    is_int(kgx_db_dsn_check("", err, sizeof err), 0, "empty DSN (libpq defaults)");
    is_int(kgx_db_dsn_check("host=x bogus=1", err, sizeof err), -1, "unknown keyword");
    ok(strstr(err, "bogus") && !strchr(err, '\n'), "one line naming it: %s", err);
    is_int(kgx_db_dsn_check("dbname='open", err, sizeof err), -1, "unterminated quote");
    is_int(kgx_db_dsn_check("postgresql://x:y@[::1", err, sizeof err), -1, "broken URI");
    return done_testing();
}
