//! Secrets by reference, read on the machine with the instance role: SSM Parameter
//! Store (`ssm:NAME`, decrypted) and Secrets Manager (an ARN, its `SecretString`).
//! The values go to the script's environment only.

use augur_model::secret::SecretRef;

/// The two services a secret may live in.
#[derive(Clone, Debug)]
pub struct Secrets {
    ssm: aws_sdk_ssm::Client,
    manager: aws_sdk_secretsmanager::Client,
}

impl Secrets {
    pub fn new(config: &aws_config::SdkConfig) -> Secrets {
        Secrets {
            ssm: aws_sdk_ssm::Client::from_conf(
                aws_sdk_ssm::config::Builder::from(config)
                    .interceptor(crate::calls::CallCounter)
                    .build(),
            ),
            manager: aws_sdk_secretsmanager::Client::from_conf(
                aws_sdk_secretsmanager::config::Builder::from(config)
                    .interceptor(crate::calls::CallCounter)
                    .build(),
            ),
        }
    }

    /// The value `r` refers to; why not, naming the reference (never a value).
    pub async fn read(&self, r: &SecretRef) -> Result<String, String> {
        let value = match r {
            SecretRef::Ssm(name) => self
                .ssm
                .get_parameter()
                .name(name)
                .with_decryption(true)
                .send()
                .await
                .map_err(|e| crate::error_text(&e))?
                .parameter
                .and_then(|p| p.value),
            SecretRef::SecretsManager(arn) => {
                self.manager
                    .get_secret_value()
                    .secret_id(arn)
                    .send()
                    .await
                    .map_err(|e| crate::error_text(&e))?
                    .secret_string
            }
        };
        value.ok_or_else(|| "it has no text value".to_string())
    }
}
