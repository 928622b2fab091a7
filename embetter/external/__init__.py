"""Encoders for hosted embedding APIs: OpenAI (and compatible servers), Azure OpenAI, Cohere,
Ollama. Each needs its provider's client: `pip install 'embetter[openai]'` (or `cohere`,
`ollama`); importing this package needs none of them."""

from embetter.external._calls import HostedAPIError
from embetter.external._cohere import CohereEncoder
from embetter.external._ollama import OllamaEncoder
from embetter.external._openai import AzureOpenAIEncoder, OpenAIEncoder

__all__ = [
    "OpenAIEncoder",
    "AzureOpenAIEncoder",
    "CohereEncoder",
    "OllamaEncoder",
    "HostedAPIError",
]
