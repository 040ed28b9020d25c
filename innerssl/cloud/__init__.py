"""Running containers elsewhere: Azure ML command jobs (azure-ai-ml, the optional ``azure`` extra).

``parameters`` declares the flags (every container has them); ``azureml`` builds, writes and submits
jobs and imports the Azure SDK only when one of those flags asks for it.
"""

from innerssl.cloud.parameters import AzureMLParameters

__all__ = ["AzureMLParameters"]
