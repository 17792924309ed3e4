//! Our WS-Addressing actions agree with the IHE WSDLs (test_data/wsdl): for every operation, the
//! portType's `wsaw:Action` of input and output and the binding's `soap12:operation
//! soapAction` are the request and response actions of one [`Transaction`]. ITI-57 is in none
//! of these WSDLs (see `hie_xds::actions`).

use std::path::Path;

use hie_xds::actions::Transaction;
use hie_xds::xml::{self, Limits};

const NS_WSDL: &str = "http://schemas.xmlsoap.org/wsdl/";
const NS_WSAW: &str = "http://www.w3.org/2006/05/addressing/wsdl";
const NS_WSDL_SOAP12: &str = "http://schemas.xmlsoap.org/wsdl/soap12/";

/// (operation, input action, output action, soapAction) of every operation of a WSDL.
fn operations(file: &str) -> Vec<(String, String, String, String)> {
    let bytes = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/wsdl").join(file)).unwrap();
    let document = xml::parse(&bytes, &Limits::DEFAULT).unwrap();
    let definitions = document.root();
    let port_type = definitions.child(NS_WSDL, "portType").unwrap();
    let binding = definitions.child(NS_WSDL, "binding").unwrap();
    port_type
        .children_named(NS_WSDL, "operation")
        .map(|operation| {
            let name = operation.attribute("name").unwrap().to_owned();
            let action = |direction: &str| {
                operation
                    .child(NS_WSDL, direction)
                    .and_then(|message| message.attribute_ns(NS_WSAW, "Action"))
                    .unwrap()
                    .to_owned()
            };
            let soap_action = binding
                .children_named(NS_WSDL, "operation")
                .find(|bound| bound.attribute("name") == Some(name.as_str()))
                .and_then(|bound| bound.child(NS_WSDL_SOAP12, "operation"))
                .and_then(|soap| soap.attribute("soapAction"))
                .unwrap()
                .to_owned();
            (name, action("input"), action("output"), soap_action)
        })
        .collect()
}

#[test]
fn every_wsdl_operation_is_one_of_our_transactions() {
    let mut seen = Vec::new();
    for file in ["XDS.b_DocumentRepository.wsdl", "XDS.b_DocumentRegistry.wsdl", "XDS-I.b_ImagingDocumentSource.wsdl"] {
        for (name, input, output, soap_action) in operations(file) {
            assert_eq!(input, soap_action, "{file} {name}: wsaw:Action and soapAction differ");
            let transaction = Transaction::from_request_action(&input)
                .unwrap_or_else(|| panic!("{file} {name}: {input} is not ours"));
            assert_eq!(transaction.response_action(), output, "{file} {name}");
            seen.push(transaction);
        }
    }
    seen.sort_by_key(|transaction| transaction.request_action());
    let mut expected: Vec<Transaction> = Transaction::ALL
        .iter()
        .copied()
        .filter(|transaction| *transaction != Transaction::Iti57UpdateDocumentSet)
        .collect();
    expected.sort_by_key(|transaction| transaction.request_action());
    assert_eq!(seen, expected, "each WSDL operation once, and every transaction but ITI-57 in a WSDL");
}
