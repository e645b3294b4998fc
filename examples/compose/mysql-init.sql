-- The sample inventory database (MySQL 8 in the compose stack, MariaDB in scripts/demo.sh).
-- In the compose stack this runs as root, so it grants the CDC privileges too; the demo skips
-- the GRANT lines (services.sh has given them).
CREATE TABLE products (
  id BIGINT UNSIGNED PRIMARY KEY,
  sku VARCHAR(32) NOT NULL,
  name VARCHAR(100) CHARACTER SET latin1,
  price DECIMAL(10,2),
  stock INT NOT NULL,
  discontinued BOOLEAN NOT NULL DEFAULT FALSE,
  updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  attrs JSON
) DEFAULT CHARSET=utf8mb4;
INSERT INTO products (id, sku, name, price, stock, discontinued, attrs)
SELECT n, CONCAT('SKU-', n), CONCAT(' product ', n), n * 1.25, n % 50, n % 17 = 0,
       JSON_OBJECT('color', ELT(1 + n % 3, 'red', 'green', 'blue'), 'weight_g', CAST(n * 10 AS CHAR))
FROM (SELECT a.d + 10 * b.d + 1 AS n
      FROM (SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
            UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) a,
           (SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4
            UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9
            UNION ALL SELECT 10 UNION ALL SELECT 11 UNION ALL SELECT 12 UNION ALL SELECT 13 UNION ALL SELECT 14
            UNION ALL SELECT 15 UNION ALL SELECT 16 UNION ALL SELECT 17 UNION ALL SELECT 18 UNION ALL SELECT 19) b) s;
GRANT SELECT, RELOAD, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'sluice'@'%';
