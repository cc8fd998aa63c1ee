"""Reference values the generator draws from (realistic, public code sets)."""

# (department, [(CPT/HCPCS, typical billed dollars)])
DEPARTMENTS = {
    "primary_care": [("99213", 145), ("99214", 210), ("99203", 180), ("G0439", 190)],
    "cardiology": [("93000", 60), ("93306", 650), ("93350", 900), ("99244", 320)],
    "orthopedics": [("20610", 240), ("73721", 1100), ("29881", 4200), ("97110", 95)],
    "emergency": [("99284", 780), ("99285", 1250), ("12001", 340), ("71046", 210)],
    "radiology": [("74177", 1400), ("70553", 2300), ("77067", 260), ("76700", 420)],
    "laboratory": [("80053", 45), ("85025", 30), ("83036", 40), ("36415", 12)],
    "behavioral_health": [("90834", 160), ("90837", 210), ("90791", 240), ("H0031", 130)],
    "oncology": [("96413", 850), ("J9271", 9800), ("96375", 180), ("77385", 1900)],
}
ICD10_CODES = [
    "E11.9", "E11.65", "I10", "I25.10", "J45.909", "M54.50", "M17.11", "F32.A", "F41.1", "N18.30",
    "Z00.00", "Z12.31", "R07.9", "S83.241A", "C50.911", "K21.9", "E78.5", "J06.9", "U07.1", "G47.33",
]
PLACES_OF_SERVICE = ["11", "11", "11", "22", "21", "23", "81", "02", "19", "12"]
CARC_DENIAL_CODES = ["4", "16", "18", "27", "29", "45", "50", "96", "97", "109", "197", "204"]
FIRST_NAMES = [
    "Aurelia", "Bartholomew", "Cordelia", "Desmond", "Evangeline", "Fitzgerald", "Gwendolyn", "Horatio",
    "Isadora", "Jeremiah", "Katarina", "Leopold", "Marguerite", "Nathaniel", "Ophelia", "Percival",
    "Quintessa", "Rosalind", "Sebastian", "Theodora", "Ulysses", "Valentina", "Wilhelmina", "Xavier",
    "Yolanda", "Zachariah", "Anastasia", "Benedict", "Clementine", "Dashiell",
]
LAST_NAMES = [
    "Abernathy", "Blackwood", "Castellanos", "Delacroix", "Eastwick", "Fairbanks", "Galloway", "Hargreaves",
    "Ingersoll", "Jablonski", "Kowalczyk", "Lindqvist", "Montgomery", "Nakamura", "Oyelaran", "Pemberton",
    "Quackenbush", "Rutherford", "Szczepanski", "Thistlewood", "Umberfield", "Vanderbilt", "Whitlock",
    "Xiong", "Yarborough", "Zimmerman", "Achterberg", "Brightwater", "Cattermole", "Drummondville",
]
ZIP_CODES = [
    "02139", "10027", "19104", "30309", "33139", "44106", "48201", "55455", "60637", "63110",
    "73104", "77030", "80045", "85004", "94143", "97239", "98195", "21287", "27710", "37232",
]
# Status draw (per mille): paid, denied, pending, adjusted, reversed
STATUS_WEIGHTS = [("paid", 640), ("denied", 150), ("pending", 90), ("adjusted", 70), ("reversed", 50)]

# Defect kinds and the silver rule each one breaks (the rule id is what the quarantine records).
DEFECT_RULES = {
    "bad_service_date": "invalid_service_date",
    "non_numeric_amount": "invalid_amount",
    "unknown_status": "unknown_status",
    "bad_npi_check_digit": "invalid_npi",
    "malformed_icd10": "invalid_diagnosis_code",
    "missing_claim_id": "missing_claim_id",
    "duplicate_line": "duplicate_line",
    "paid_exceeds_allowed": "amounts_out_of_order",
    "malformed_procedure": "invalid_procedure_code",
    "bad_place_of_service": "invalid_place_of_service",
    "missing_member_id": "missing_member_id",
}
