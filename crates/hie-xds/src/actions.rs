//! WS-Addressing actions per transaction, request and response (landscape-and-requirements.md
//! 3.3, checked against the IHE WSDLs in test_data/wsdl: `wsaw:Action` and `soap12:operation
//! soapAction` agree; ITI-57 from IPF `iti57.wsdl` and NIST `TransactionType.java`).

/// ITI-41 Provide and Register Document Set-b (also RAD-68).
pub const ITI41_REQUEST: &str = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b";
/// ITI-41 response.
pub const ITI41_RESPONSE: &str = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-bResponse";
/// ITI-42 Register Document Set-b.
pub const ITI42_REQUEST: &str = "urn:ihe:iti:2007:RegisterDocumentSet-b";
/// ITI-42 response.
pub const ITI42_RESPONSE: &str = "urn:ihe:iti:2007:RegisterDocumentSet-bResponse";
/// ITI-43 Retrieve Document Set.
pub const ITI43_REQUEST: &str = "urn:ihe:iti:2007:RetrieveDocumentSet";
/// ITI-43 response (also the RAD-69 response).
pub const ITI43_RESPONSE: &str = "urn:ihe:iti:2007:RetrieveDocumentSetResponse";
/// ITI-18 Registry Stored Query.
pub const ITI18_REQUEST: &str = "urn:ihe:iti:2007:RegistryStoredQuery";
/// ITI-18 response.
pub const ITI18_RESPONSE: &str = "urn:ihe:iti:2007:RegistryStoredQueryResponse";
/// ITI-57 Update Document Set.
pub const ITI57_REQUEST: &str = "urn:ihe:iti:2010:UpdateDocumentSet";
/// ITI-57 response.
pub const ITI57_RESPONSE: &str = "urn:ihe:iti:2010:UpdateDocumentSetResponse";
/// RAD-69 Retrieve Imaging Document Set.
pub const RAD69_REQUEST: &str = "urn:ihe:rad:2009:RetrieveImagingDocumentSet";
/// RAD-69 response: the ITI-43 response action (RAD TF-3 4.69.4.2).
pub const RAD69_RESPONSE: &str = ITI43_RESPONSE;
/// WS-Addressing fault action (WS-Addressing 1.0 SOAP Binding section 6).
pub const WSA_FAULT: &str = "http://www.w3.org/2005/08/addressing/fault";

/// A transaction this codec writes or reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transaction {
    /// ITI-41 (RAD-68 uses it for imaging manifests).
    Iti41ProvideAndRegister,
    /// ITI-42.
    Iti42Register,
    /// ITI-43.
    Iti43Retrieve,
    /// ITI-18.
    Iti18StoredQuery,
    /// ITI-57.
    Iti57UpdateDocumentSet,
    /// RAD-69.
    Rad69RetrieveImaging,
}

impl Transaction {
    /// Every transaction.
    pub const ALL: &'static [Transaction] = &[
        Transaction::Iti41ProvideAndRegister,
        Transaction::Iti42Register,
        Transaction::Iti43Retrieve,
        Transaction::Iti18StoredQuery,
        Transaction::Iti57UpdateDocumentSet,
        Transaction::Rad69RetrieveImaging,
    ];

    /// The request's wsa:Action.
    pub const fn request_action(self) -> &'static str {
        match self {
            Transaction::Iti41ProvideAndRegister => ITI41_REQUEST,
            Transaction::Iti42Register => ITI42_REQUEST,
            Transaction::Iti43Retrieve => ITI43_REQUEST,
            Transaction::Iti18StoredQuery => ITI18_REQUEST,
            Transaction::Iti57UpdateDocumentSet => ITI57_REQUEST,
            Transaction::Rad69RetrieveImaging => RAD69_REQUEST,
        }
    }

    /// The response's wsa:Action.
    pub const fn response_action(self) -> &'static str {
        match self {
            Transaction::Iti41ProvideAndRegister => ITI41_RESPONSE,
            Transaction::Iti42Register => ITI42_RESPONSE,
            Transaction::Iti43Retrieve => ITI43_RESPONSE,
            Transaction::Iti18StoredQuery => ITI18_RESPONSE,
            Transaction::Iti57UpdateDocumentSet => ITI57_RESPONSE,
            Transaction::Rad69RetrieveImaging => RAD69_RESPONSE,
        }
    }

    /// The transaction a request action belongs to.
    pub fn from_request_action(action: &str) -> Option<Transaction> {
        Transaction::ALL.iter().copied().find(|transaction| transaction.request_action() == action)
    }
}
