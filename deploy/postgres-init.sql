-- Run once by the postgres image on an empty data directory (docker-compose.yml).
-- pgvector lets the offline store keep embeddings as vectors for ad-hoc similarity queries.
CREATE EXTENSION IF NOT EXISTS vector;
