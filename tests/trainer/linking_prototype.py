#!/usr/bin/env python3
"""Does a decoder trained from scratch learn link-context learning, and what makes it? A PyTorch prototype of the
tiny recipe on precomputed frozen-tower features (the same tower, synth tree and decoder blocks as lcl's; labels are
26 letter tokens, names one token per class), fast enough to compare recipes in minutes. It is how
data.support_names was found (README, "What the quickstart shows"):

    .venv/bin/python tests/trainer/linking_prototype.py runs/data/tiny-model runs/data/synth \
        --patches mean --markers 0 --batch 16 --steps 1000 [--aux 1]

prints, every --every steps, the training loss and the query accuracy (argmax over the 26 letters) on training
classes and on held-out classes, with ("heldout-acc") and without ("heldout-plain") names in the held-out supports.
"""
import argparse, json, math, os, random, sys, time
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "sampler"))
sys.path.insert(0, os.path.join(here, "..", "bench"))
from tower_probe import load_tower, tower_features, load_image  # noqa
import train_reference as tr  # noqa

ap = argparse.ArgumentParser()
ap.add_argument("model_dir"); ap.add_argument("root")
ap.add_argument("--steps", type=int, default=1500)
ap.add_argument("--lr", type=float, default=3e-3)
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--shot", type=int, default=4)
ap.add_argument("--layers", type=int, default=4)
ap.add_argument("--heads", type=int, default=4)
ap.add_argument("--hidden", type=int, default=128)
ap.add_argument("--norm", default="none", help="none|standardize|layernorm")
ap.add_argument("--markers", type=int, default=1)
ap.add_argument("--patches", default="all", help="all|mean")
ap.add_argument("--in_family", type=float, default=0.5)
ap.add_argument("--proj", default="mlp")
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--wd", type=float, default=0.0)
ap.add_argument("--every", type=int, default=250)
ap.add_argument("--dup", type=float, default=0.0, help="fraction of training queries that are an exact copy of "
                "one of their side's support images")
ap.add_argument("--exact", type=int, default=0)
ap.add_argument("--fixed_labels", type=int, default=0)
ap.add_argument("--aux", type=float, default=0)
ap.add_argument("--aux_until", type=float, default=1.0)
args = ap.parse_args()
torch.manual_seed(args.seed); random.seed(args.seed)
torch.set_num_threads(int(os.environ.get("TH", "1")))

w, vcfg, sel = load_tower(args.model_dir)
split = json.load(open(os.path.join(args.root, "class_split.json")))
wn = {i + 1: l.split()[0] for i, l in enumerate(open(os.path.join(args.root, "LOC_synset_mapping.txt")))}
fam_of = {}
for fi, fam in enumerate(split["families"]):
    for c in fam: fam_of[c] = fi
cache = os.path.join(args.model_dir, "linking_prototype_features.pt")
if os.path.exists(cache):
    feats = torch.load(cache)
else:
    feats = {}
    for c in split["train"] + split["test"]:
        d = os.path.join(args.root, "train", wn[c])
        files = sorted(os.listdir(d))
        imgs = torch.stack([load_image(os.path.join(d, f), vcfg["image_size"]) for f in files])
        with torch.no_grad():
            feats[c] = tower_features(w, vcfg, sel, imgs).view(len(files), -1, vcfg["hidden_size"])
    torch.save(feats, cache)
P = next(iter(feats.values())).shape[1]
Cv = vcfg["hidden_size"]
allf = torch.cat(list(feats.values()))
print("features", allf.shape, "mean-norm", allf.mean(0).norm().item(), "per-image dev",
      (allf - allf.mean(0)).norm(dim=(1, 2)).mean().item(), "total norm", allf.norm(dim=(1, 2)).mean().item())
mu, sd = allf.mean(0, keepdim=True), allf.std(0, keepdim=True) + 1e-5
if args.norm == "standardize":
    feats = {c: (f - mu) / sd for c, f in feats.items()}
if args.exact:
    feats = {c: f.mean(0, keepdim=True).expand_as(f).contiguous() for c, f in feats.items()}
if args.patches == "mean":
    feats = {c: f.mean(1, keepdim=True) for c, f in feats.items()}
    P = 1

V = 160
NAME0 = 80
BOS, EOS, IMS, IME, IMG = 1, 2, 3, 4, 5
LET0 = 10  # letters 10..35
H = args.hidden
cfg = dict(vocab_size=V, hidden_size=H, intermediate_size=int(H * 2.75), num_hidden_layers=args.layers,
           num_attention_heads=args.heads, num_key_value_heads=args.heads, rms_norm_eps=1e-5, rope_theta=10000.0)


class Model(nn.Module):
    def __init__(s):
        super().__init__()
        s.emb = nn.Embedding(V, H)
        s.layers = nn.ModuleList(tr.LlamaDecoderLayer(cfg) for _ in range(args.layers))
        s.norm = tr.RMSNorm(H, 1e-5)
        s.head = nn.Linear(H, V, bias=False)
        s.ln = nn.LayerNorm(Cv) if args.norm == "layernorm" else nn.Identity()
        s.proj = nn.Sequential(nn.Linear(Cv, H), nn.GELU(), nn.Linear(H, H)) if args.proj == "mlp" else nn.Linear(Cv, H)

    def forward(s, ids, imgfeat):
        isimg = ids.eq(IMG)
        h = s.emb(ids.masked_fill(isimg, 0))
        tok = s.proj(s.ln(imgfeat))
        h = h.masked_scatter(isimg.unsqueeze(-1), tok.reshape(-1, H))
        b, t = ids.shape
        d = H // args.heads
        inv = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
        ang = torch.outer(torch.arange(t, dtype=torch.float64), inv).float()
        e = torch.cat([ang, ang], -1)
        cos, sin = e.cos(), e.sin()
        mask = torch.full((t, t), float("-inf")).triu(1)
        for l in s.layers: h = l(h, cos, sin, mask)
        return s.head(s.norm(h))


def episode(classes, rng, dup=None, aux=None):
    dup = args.dup if dup is None else dup
    a = rng.choice(classes)
    same = [c for c in classes if fam_of[c] == fam_of[a] and c != a]
    b = rng.choice(same) if same and rng.random() < args.in_family else rng.choice([c for c in classes if c != a])
    la, lb = rng.sample(range(26), 2)
    if args.fixed_labels:
        la, lb = a % 26, b % 26
        if la == lb: lb = (lb + 1) % 26
    qpos = rng.random() < 0.5
    na = args.shot + (1 if qpos else 0); nb = args.shot + (0 if qpos else 1)
    ia = rng.sample(range(len(feats[a])), na); ib = rng.sample(range(len(feats[b])), nb)
    ex = [(feats[a][i], la, a) for i in ia[:args.shot]] + [(feats[b][i], lb, b) for i in ib[:args.shot]]
    rng.shuffle(ex)
    q = (feats[a][ia[-1]], la, None) if qpos else (feats[b][ib[-1]], lb, None)
    if dup > 0 and rng.random() < dup:  # the query is an exact copy of one of its side's support images
        q = (feats[a][ia[0]], la, None) if qpos else (feats[b][ib[0]], lb, None)
    ids, lab, imgs = [BOS], [-100], []
    for f, l, c in ex + [q]:
        blk = ([IMS] if args.markers else []) + [IMG] * P + ([IME] if args.markers else [])
        ids += blk; lab += [-100] * len(blk)
        use_aux = (rng.random() < args.aux) if aux is None else aux
        extra = [NAME0 + c] if (use_aux and c is not None) else []
        ids += [LET0 + l] + extra + [EOS]; lab += [LET0 + l] + extra + [EOS]
        imgs.append(f)
    return ids, lab, torch.stack(imgs), q[1]


def batch(classes, rng, n, dup=None, aux=None):
    eps = [episode(classes, rng, dup, aux) for _ in range(n)]
    ids = torch.tensor([e[0] for e in eps]); lab = torch.tensor([e[1] for e in eps])
    imgs = torch.cat([e[2] for e in eps]); ans = torch.tensor([e[3] for e in eps])
    return ids, lab, imgs, ans


model = Model()
opt = torch.optim.AdamW([p for p in model.parameters()], lr=args.lr, betas=(0.9, 0.95), weight_decay=args.wd)
rng = random.Random(args.seed)
erng = random.Random(999)
test_eval = [batch(split["test"], erng, 64, 0.0, True) for _ in range(4)]
erng = random.Random(999)
test_plain = [batch(split["test"], erng, 64, 0.0, False) for _ in range(4)]
t0 = time.time()


def evaluate(bs):
    model.eval(); c = n = 0
    with torch.no_grad():
        for ids, lab, imgs, ans in bs:
            lg = model(ids, imgs)
            pos = ids.shape[1] - 3  # position before the query's letter
            pred = lg[:, pos, LET0:LET0 + 26].argmax(-1)
            c += (pred == ans).sum().item(); n += len(ans)
    model.train(); return c / n


for step in range(1, args.steps + 1):
    lr = args.lr * min(1, step / (0.05 * args.steps)) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
    for g in opt.param_groups: g["lr"] = lr
    if step > args.aux_until * args.steps: args.aux = 0.0
    ids, lab, imgs, ans = batch(split["train"], rng, args.batch)
    lg = model(ids, imgs)
    loss = F.cross_entropy(lg[:, :-1].reshape(-1, V), lab[:, 1:].reshape(-1), ignore_index=-100)
    opt.zero_grad(); loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    if step % args.every == 0 or step == args.steps:
        tr_acc = evaluate([batch(split["train"], random.Random(5), 128, 0.0)])
        print(f"step {step} loss {loss.item():.3f} train-acc {tr_acc:.3f} heldout-acc {evaluate(test_eval):.3f} "
              f"heldout-plain {evaluate(test_plain):.3f} t {time.time()-t0:.0f}s", flush=True)
