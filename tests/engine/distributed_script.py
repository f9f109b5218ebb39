"""Trains FastSCNN for one epoch; run by tests/engine/test_distributed.py under paddle.distributed.launch."""
import os, sys, paddle, paddlex_seg as seg
from paddlex_seg import transforms as T
root = sys.argv[1]
d = seg.make_synthetic_dataset(root + '/data_' + os.environ.get('PADDLE_TRAINER_ID', '0'), num_train=8, num_val=2, image_size=(64, 64), num_classes=3, seed=0)
tr = seg.SegDataset(d.root, d.train_list, d.label_list, transforms=T.Compose([T.Normalize()]), shuffle=False, num_workers=0)
ev = seg.SegDataset(d.root, d.val_list, d.label_list, transforms=T.Compose([T.Normalize()]), num_workers=0)
paddle.seed(0)
m = seg.FastSCNN(num_classes=3)
m.train(num_epochs=1, train_dataset=tr, eval_dataset=ev, train_batch_size=2, pretrain_weights=None, save_dir=root + '/out', use_vdl=False, log_interval_steps=1)
print('RANK', paddle.distributed.get_rank(), 'WORLD', paddle.distributed.get_world_size(), 'DONE')
