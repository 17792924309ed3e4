-- The affinity-domain patient ID (CX) a submission's last request went under: the patient the
-- registry files a done publish under. A patient merge looks up the studies registered under the
-- prior patient's ID by it (profile `[patient_merge] published = "republish"`), and a study's
-- next version tells from it that its registered entry belongs to another patient. NULL for rows
-- older than the column and for submissions not sent.
ALTER TABLE submissions ADD COLUMN affinity_patient_id TEXT NULL;
CREATE INDEX submissions_by_patient ON submissions(affinity_patient_id) WHERE affinity_patient_id IS NOT NULL;
