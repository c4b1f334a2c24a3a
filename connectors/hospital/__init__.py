"""Hospital HIS connector: HL7 v2 (REF/RRI^I12, ADT; files and MLLP) and FHIR status in, deliveries out."""
