"""A model that is not an image classifier: token ids with an attention mask, plus a float feature vector, scored
into 3 classes (a small ranking/intent model). Three named inputs of two dtypes and a free sequence length:

    deploycmp run --model examples.ranker:build --input ids:int64:batch,sequence \
        --input attention_mask:int64:batch,sequence --input feats:float32:1,8 --shape sequence=16,64 \
        --formats onnx,tflite,executorch --quantize none,int8 --out runs/ranker

The token-id range is read from the model's embedding (2,000 ids); pass --value-range ids:LOW,HIGH to narrow it.
"""
import torch
from torch import nn


class Ranker(nn.Module):
    def __init__(self, vocab: int = 2000, width: int = 32, features: int = 8, classes: int = 3):
        super().__init__()
        self.tokens = nn.Embedding(vocab, width)
        self.encoder = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))
        self.features = nn.Linear(features, width)
        self.head = nn.Linear(2 * width, classes)

    def forward(self, ids, attention_mask, feats):
        h = self.encoder(self.tokens(ids))
        mask = attention_mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # mean over the real tokens only
        return self.head(torch.cat([pooled, torch.relu(self.features(feats))], dim=1))


def build() -> nn.Module:
    torch.manual_seed(0)
    return Ranker()
