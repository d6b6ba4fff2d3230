-- grain: one row per feature, as of the newest scored day; key: feature_key.
-- marts.feature_health keeps every as-of day (backfills, replays); this is the day people mean.
select *
from marts.feature_health
where as_of_date = (select max(h.as_of_date) from marts.feature_health as h)
