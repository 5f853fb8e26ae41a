-- clean_images: an image snapshot (Parquet written by gen_assets/sources/images.py) -> the clean table
-- {table} and this asset's rows in quarantine. Every input row ends in exactly one of the two.
--
-- gen_assets.cleaning.images.clean_images runs this file inside ONE transaction (it begins, commits or
-- rolls back), so readers keep seeing the previous clean table and quarantine rows until the new ones
-- are complete. {table} is the clean table's (quoted) name; the values arrive as DuckDB variables:
--   snapshot_path, snapshot_version   the Parquet file and its data version
--   asset                             quarantine.asset for these rows (the clean table's name)
--   expected_width, expected_height   the image size; NULL = inferred from the most common decodable size
--   resize                            'none': a row of another size is quarantined; 'crop' | 'fit' | 'pad':
--                                     it is resized by gen_assets_resize_image (a Python UDF the runner
--                                     registers: gen_assets.media.png.resize_image)
--   test_buckets, val_buckets         split sizes out of 10,000 hash buckets
--   quarantined_at                    one timestamp for the whole run (UTC)


-- 1. The size every clean image has: the configured one, else inferred from the most common size among the
--    rows that decode: that size itself with resize 'none', else the square of its shorter side (the
--    models are square). Ties are broken by the size itself so the choice never depends on row order.
CREATE OR REPLACE TEMP TABLE _clean_images_expected AS
WITH most_common AS (
    SELECT width, height
    FROM read_parquet(getvariable('snapshot_path'))
    WHERE decode_error IS NULL AND width IS NOT NULL AND height IS NOT NULL
    GROUP BY width, height
    ORDER BY count(*) DESC, width, height
    LIMIT 1
)
SELECT
    coalesce(getvariable('expected_width'), (
        SELECT CASE WHEN getvariable('resize') = 'none' THEN width ELSE least(width, height) END FROM most_common
    ))::INTEGER AS width,
    coalesce(getvariable('expected_height'), (
        SELECT CASE WHEN getvariable('resize') = 'none' THEN height ELSE least(width, height) END FROM most_common
    ))::INTEGER AS height;


-- 2. One verdict per row from the row alone: reason_kind and reason are NULL for a row that passes every
--    check, else the FIRST problem found (duplicates are step 3).
--    A clean row of another size is resized here (resize policy other than 'none'); its image, content_hash,
--    size and channels are then those of the resized PNG. Rows of the expected size keep their bytes.
--    Clean rows get their split here. The split is a function of the raw image content alone: the same
--    image lands in the same split in every snapshot (whatever the resize policy), so re-collected data
--    never moves a test image into train.
CREATE OR REPLACE TEMP TABLE _clean_images_checked AS
WITH raw AS (
    SELECT
        file_row_number,               -- identifies a row even when row_ids repeat
        row_id,
        source,
        lower(trim(label)) AS label,   -- " Cat" and "cat" are one category; nothing cleverer than that
        image,
        content_hash,
        width,
        height,
        channels,
        decode_error
    FROM read_parquet(getvariable('snapshot_path'), file_row_number = true)
),
verdicts AS (
    SELECT
        raw.*,
        expected.width AS expected_width,
        expected.height AS expected_height,
        CASE
            WHEN raw.image IS NULL OR raw.decode_error IS NOT NULL OR raw.width IS NULL
                 OR raw.height IS NULL OR raw.channels IS NULL                   THEN 'undecodable'
            -- dedup and the split both trust content_hash, so it must really be the hash of the bytes
            WHEN raw.content_hash IS DISTINCT FROM sha256(raw.image)             THEN 'hash_mismatch'
            WHEN raw.label IS NULL OR raw.label = ''                             THEN 'missing_label'
            WHEN getvariable('resize') = 'none'
                 AND (raw.width <> expected.width OR raw.height <> expected.height) THEN 'wrong_size'
        END AS reason_kind
    FROM raw, _clean_images_expected AS expected
),
resized AS (
    SELECT
        verdicts.*,
        CASE WHEN reason_kind IS NULL AND (width <> expected_width OR height <> expected_height)
             THEN gen_assets_resize_image(image, expected_width, getvariable('resize'))
        END AS fitted   -- {image, channels}; NULL when the row keeps its bytes
    FROM verdicts
)
SELECT
    file_row_number,
    row_id,
    source,
    label,
    coalesce(fitted.image, image) AS image,
    CASE WHEN fitted IS NULL THEN content_hash ELSE sha256(fitted.image) END AS content_hash,
    CASE WHEN fitted IS NULL THEN width ELSE expected_width END AS width,
    CASE WHEN fitted IS NULL THEN height ELSE expected_height END AS height,
    coalesce(fitted.channels, channels) AS channels,
    fitted IS NOT NULL AS resized,
    reason_kind,
    CASE reason_kind
        WHEN 'undecodable' THEN 'undecodable: ' || coalesce(
            decode_error, CASE WHEN image IS NULL THEN 'no image bytes' ELSE 'no image size recorded' END)
        WHEN 'hash_mismatch' THEN 'content_hash does not match the image bytes'
        WHEN 'missing_label' THEN 'missing label'
        WHEN 'wrong_size' THEN
            format('wrong size: {}x{}, expected {}x{}', width, height, expected_width, expected_height)
    END AS reason,
    CASE
        WHEN reason_kind IS NOT NULL THEN NULL
        WHEN TRY_CAST('0x' || left(resized.content_hash, 8) AS UBIGINT) % 10000 < getvariable('test_buckets') THEN 'test'
        WHEN TRY_CAST('0x' || left(resized.content_hash, 8) AS UBIGINT) % 10000
             < getvariable('test_buckets') + getvariable('val_buckets') THEN 'val'
        ELSE 'train'
    END AS split
FROM resized;


-- 3. Exact duplicates among the rows still clean: each image's first row by row_id stays, its other
--    copies are quarantined pointing at it. Only clean rows compete, so a bad copy (a blank label, say)
--    never shadows a good one. This table lists the copies that go (a few per cent of the rows, no image
--    bytes); nothing is updated in place. Grouping a million 64-character hashes is the slow part, so a
--    first pass groups their 64-bit hash() and only the rows whose hash() repeats are grouped exactly.
CREATE OR REPLACE TEMP TABLE _clean_images_duplicates AS
WITH candidates AS (
    SELECT file_row_number, row_id, content_hash
    FROM _clean_images_checked
    WHERE reason_kind IS NULL
      AND hash(content_hash) IN (
          SELECT hash(content_hash) FROM _clean_images_checked
          WHERE reason_kind IS NULL
          GROUP BY ALL
          HAVING count(*) > 1)
),
copies AS (
    SELECT content_hash, min({'row_id': row_id, 'n': file_row_number}) AS first
    FROM candidates
    GROUP BY content_hash
    HAVING count(*) > 1
)
SELECT candidates.file_row_number, copies.first.row_id AS first_row_id
FROM candidates JOIN copies USING (content_hash)
WHERE candidates.file_row_number <> copies.first.n;


-- 4. The clean table, replaced as a whole. The image bytes (PNG/JPEG: compressed already) and the hashes
--    (random hex) are stored as they are: compression analysis on them costs time and wins little.
CREATE OR REPLACE TABLE {table} (
    row_id       VARCHAR NOT NULL,
    source       VARCHAR NOT NULL,
    label        VARCHAR NOT NULL,   -- the category: trimmed, lower-case, never blank
    image        BLOB    NOT NULL USING COMPRESSION uncompressed,
    content_hash VARCHAR NOT NULL USING COMPRESSION uncompressed,
    width        INTEGER NOT NULL,
    height       INTEGER NOT NULL,
    channels     INTEGER NOT NULL,
    split        VARCHAR NOT NULL    -- train | val | test
);

INSERT INTO {table}
SELECT row_id, source, label, image, content_hash, width, height, channels, split
FROM _clean_images_checked
WHERE reason_kind IS NULL
  AND file_row_number NOT IN (SELECT file_row_number FROM _clean_images_duplicates);


-- 5. This asset's quarantine rows for this snapshot are replaced, not appended: cleaning the same
--    snapshot twice must not count its bad rows twice. Rows of other snapshots stay as history.
DELETE FROM quarantine
WHERE asset = getvariable('asset') AND snapshot_version = getvariable('snapshot_version');

INSERT INTO quarantine (asset, snapshot_version, source, row_id, reason, content_hash, quarantined_at)
SELECT getvariable('asset'), getvariable('snapshot_version'), source, row_id, reason, content_hash,
       getvariable('quarantined_at')
FROM (
    SELECT source, row_id, reason, content_hash
    FROM _clean_images_checked
    WHERE reason_kind IS NOT NULL
    UNION ALL
    SELECT checked.source, checked.row_id, 'duplicate of row ' || copies.first_row_id, checked.content_hash
    FROM _clean_images_duplicates AS copies JOIN _clean_images_checked AS checked USING (file_row_number)
)
ORDER BY row_id;
