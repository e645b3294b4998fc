-- Routing: the page views of the mixed event stream, flattened from the JSON payload, with the
-- path normalised to lower case.
CREATE STREAM clean.page_views AS
SELECT id,
       lower(json_get_str(payload, 'page')) AS page,
       json_get_str(payload, 'referrer') AS referrer,
       at
FROM shop.public.events
WHERE kind = 'page_view';
