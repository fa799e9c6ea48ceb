-- 0002: who changed which setting, when, from what to what (SPEC §2, §7).
CREATE TABLE IF NOT EXISTS settings_audit (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    setting_key VARCHAR(50) NOT NULL,
    old_value   TEXT,
    new_value   TEXT NOT NULL,
    changed_by  VARCHAR(100) NOT NULL,
    changed_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_settings_audit_changed_at ON settings_audit (changed_at);

INSERT INTO schema_migrations (version) VALUES ('0002_settings_audit') ON CONFLICT DO NOTHING;
