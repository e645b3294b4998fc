-- Customers without personal data: the e-mail is kept only as a hash (to join on) and in a
-- masked form; the sign-up time is normalised to the day (UTC).
CREATE STREAM clean.customers AS
SELECT id,
       encode(sha256(lower(email)), 'hex') AS email_sha256,
       regexp_replace(email, '^[^@]+', '***') AS email_masked,
       date_trunc('day', created) AS created_day
FROM shop.public.customers;
