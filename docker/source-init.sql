-- Runs once when the product-db container initializes its datadir.
CREATE USER IF NOT EXISTS 'repl'@'%' IDENTIFIED BY 'replpw';
GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT ON *.* TO 'repl'@'%';

CREATE DATABASE IF NOT EXISTS product;
USE product;
CREATE TABLE category (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL, parent_id INT NULL) ENGINE=InnoDB;
CREATE TABLE product (
  id BIGINT UNSIGNED PRIMARY KEY,
  code VARCHAR(32) NOT NULL,
  model VARCHAR(100) NOT NULL,
  category_id INT NOT NULL,
  production_year YEAR NOT NULL,
  price DECIMAL(10,2) NOT NULL,
  UNIQUE KEY uk_code (code),
  KEY idx_category (category_id)
) ENGINE=InnoDB;
CREATE TABLE batch (
  product_id BIGINT UNSIGNED NOT NULL,
  batch_no INT NOT NULL,
  quantity INT NOT NULL,
  made_on DATE NOT NULL,
  PRIMARY KEY (product_id, batch_no)
) ENGINE=InnoDB;
INSERT INTO category VALUES (1, 'Hydraulic pumps', NULL), (2, 'Electric motors', NULL), (3, 'Valves', NULL);
INSERT INTO product VALUES (1, 'PRD-000001', 'HX-100', 1, 2021, 120.00), (2, 'PRD-000002', 'MX-220', 2, 2019, 340.50);
INSERT INTO batch VALUES (1, 1, 50, '2024-03-01'), (2, 1, 20, '2024-03-02');
