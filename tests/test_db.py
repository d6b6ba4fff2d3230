"""tasks.db.transaction: one BEGIN ... COMMIT, rolled back whole when the block raises."""

from __future__ import annotations

import duckdb
import pytest

from tasks.db import transaction


def test_transaction_commits_the_block_and_rolls_back_a_failed_one(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.execute("create table t (x int)")
    with transaction(con):
        con.execute("insert into t values (1)")
    assert con.sql("select x from t").fetchall() == [(1,)]

    for exc in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)), transaction(con):
            con.execute("insert into t values (2)")
            raise exc
        assert con.sql("select x from t").fetchall() == [(1,)]  # nothing of the block stays
    with transaction(con):  # and the connection is usable again
        con.execute("insert into t values (3)")
    assert con.sql("select x from t order by x").fetchall() == [(1,), (3,)]
