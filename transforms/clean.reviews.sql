-- Reviews from the MongoDB catalog: columns inferred from the documents, the nested author
-- flattened from its JSON, spam (rating 0 or below) filtered out. A rating that is not a
-- number fails the CAST: that document is a dead letter.
CREATE STREAM clean.reviews WITH (dlq = 'dlq.reviews') AS
SELECT _id AS review_id,
       product_id,
       CAST(rating AS INT) AS rating,
       json_get_str(author, 'name') AS author,
       json_get_str(author, 'country') AS country,
       created_at
FROM catalog.catalog.reviews
WHERE CAST(rating AS INT) > 0;
