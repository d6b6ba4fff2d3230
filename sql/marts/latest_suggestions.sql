-- grain: one row per suggestion, as of the newest scored day; key: fingerprint.
-- Ranked by priority_rank (1 = do first).
select *
from marts.backlog_suggestions
where as_of_date = (select max(s.as_of_date) from marts.backlog_suggestions as s)
